"""Fault injection across the commands: each bad input ends with exactly one `Error:` line that names the file or
value and the problem, a non-zero exit status and no traceback.

Commands run in-process through click's CliRunner; a case is (name, argv, words the error line must hold),
with argv built from fixtures of bad files. An exception other than click's exit would be a traceback for
a user, so it fails the case too.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from PIL import Image
from pydicom.data import get_testdata_file

from tfbonemet.cli import cli
from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import write_dataset
from tfbonemet.io.integrity import record

CT, MR, LOSSY = (get_testdata_file(name) for name in ("CT_small.dcm", "MR_small.dcm", "JPEG-lossy.dcm"))
DUMMY = Path(__file__).parents[1] / "tfds_builders" / "bone_scintigraphy" / "dummy_data"


def assert_one_error(args: list, *words: str, env: dict | None = None) -> str:
    """Run `tfbonemet ARGS`; the one Error line must hold every word (case-insensitive). Returns it."""
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env)
    output = result.output
    assert result.exit_code not in (0, None), f"exit 0 for {args}:\n{output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    for word in words:
        assert word.lower() in errors[0].lower(), f"{word!r} not in {errors[0]!r}"
    return errors[0]


# ---------------------------------------------------------------- bad files

def png_header_only(path: Path, height: int, width: int) -> Path:
    """A PNG whose header claims height x width pixels and whose data is tiny (a decompression-bomb shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode).save(path) if mode is None else Image.fromarray(array).convert(mode).save(path)
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """A folder of bad inputs, each made once."""
    root = tmp_path_factory.mktemp("bad")
    scan = np.tile(np.arange(64, dtype=np.uint8)[:, None] + 10, (1, 16))
    files = {
        "colour": save(root / "colour.png", np.stack([scan, scan // 2, scan // 3], axis=-1)),
        "tiny": save(root / "tiny.png", np.full((2, 2), 9, np.uint8)),
        "zeros": save(root / "zeros.png", np.zeros((64, 16), np.uint8)),
        "one_bit": save(root / "onebit.png", (scan > 40).astype(np.uint8) * 255, "1"),
        "bomb": png_header_only(root / "bomb.png", 30000, 30000),
        "huge": png_header_only(root / "huge.png", 12000, 14000),
        "not_png": root / "text.png",
        "random_keras": root / "random.keras",
        "random_tflite": root / "random.tflite",
        "truncated_keras": root / "truncated.keras",
        "corrupt_dcm": root / "corrupt.dcm",
        "a_file": root / "plain-file",
    }
    files["not_png"].write_bytes(b"this is text, not a PNG")
    files["random_keras"].write_bytes(os.urandom(4096))
    files["random_tflite"].write_bytes(os.urandom(4096))
    files["corrupt_dcm"].write_bytes(b"\0" * 128 + b"DICM" + os.urandom(512))
    files["a_file"].write_text("a file, not a folder")
    with zipfile.ZipFile(root / "whole.keras", "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", os.urandom(20000))
    files["truncated_keras"].write_bytes((root / "whole.keras").read_bytes()[:3000])
    pair = root / "pair"
    pair.mkdir()
    files["pair_ant"] = save(pair / "s1_ant.png", scan)
    files["pair_post"] = save(pair / "s1_post.png", np.tile(scan, (2, 1)))
    files["pair_sizes"] = pair
    files["scan"] = save(root / "scan.png", scan)
    return files


@pytest.fixture(scope="module")
def unwritable(tmp_path_factory) -> Path:
    """A folder nobody may write in: read-only for a user; /proc for root (root ignores permission bits)."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path_factory.mktemp("read-only")
    folder.chmod(0o555)
    return folder


@pytest.fixture(scope="module")
def phantom_dicom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nm")
    write_dataset(BoneScanPhantom(shape=(64, 16), seed=3).studies(2), root / "dicom")
    return root / "dicom"


@pytest.fixture(scope="module")
def ctx(bad, unwritable, phantom_dicom, tiny_run_dir, tmp_path_factory):
    """Everything the cases name: bad files, the tiny run, an unwritable folder, a scratch folder."""
    tmp = tmp_path_factory.mktemp("cases")
    (tmp / "empty").mkdir()
    return {**bad, "unwritable": unwritable, "nm": phantom_dicom, "run": tiny_run_dir, "tmp": tmp}


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("TFBONEMET_SECRET", "test-site-secret")


def run_case(cases: dict, name: str, ctx: dict, prefix: list):
    args, words = cases[name](ctx)
    assert_one_error([*prefix, *args], *words)


# ---------------------------------------------------------------- predict

def _savedmodel(c, name: str, tamper: bool = False, record_digests: bool = True) -> Path:
    """A SavedModel folder holding garbage, with metadata.json recording (or not) its digests; `tamper`
    changes saved_model.pb after they were recorded."""
    folder = c["tmp"] / name
    folder.mkdir(exist_ok=True)
    (folder / "saved_model.pb").write_bytes(b"garbage")
    metadata = {"preprocessing": json.loads((c["run"] / "preprocessor.json").read_text()),
                "classes": ["no_metastasis", "metastasis"]}
    if record_digests:
        metadata["integrity"] = record(folder)
    (folder / "metadata.json").write_text(json.dumps(metadata))
    if tamper:
        (folder / "saved_model.pb").write_bytes(b"garbage, changed after export")
    return folder


def _report(c):
    report = pydicom.dcmread(next(c["nm"].glob("*.dcm")))
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(report, keyword)
    report.Modality = "SR"
    report.save_as(c["tmp"] / "report.dcm")
    return c["tmp"] / "report.dcm"


def _folder(c, name):
    (c["tmp"] / name).mkdir(exist_ok=True)
    return c["tmp"] / name


PREDICT = {
    "model missing": lambda c: ([c["tmp"] / "nope", CT], ["nope", "no such model"]),
    "model folder of nothing": lambda c: ([c["tmp"] / "empty", CT], ["empty", "neither a run directory"]),
    "random-bytes .keras": lambda c: ([c["random_keras"], CT], ["random.keras", "not a keras model file"]),
    "truncated .keras": lambda c: ([c["truncated_keras"], CT], ["truncated.keras", "not a keras model file"]),
    "garbage .tflite alone": lambda c: ([c["random_tflite"], CT], ["random.tflite", "not a tflite model"]),
    "broken SavedModel": lambda c: ([_savedmodel(c, "broken-savedmodel"), CT], ["broken-savedmodel",
                                                                                 "cannot load savedmodel"]),
    "tampered SavedModel": lambda c: ([_savedmodel(c, "tampered", tamper=True), CT], ["saved_model.pb", "differs"]),
    "SavedModel without digests": lambda c: ([_savedmodel(c, "unrecorded", record_digests=False), CT],
                                             ["metadata.json", "no file digests"]),
    "model of an unknown kind": lambda c: ([c["a_file"], CT], ["plain-file", "not a model"]),
    "CT image": lambda c: ([c["run"], CT], ["CT_small.dcm", "modality CT"]),
    "MR image": lambda c: ([c["run"], MR], ["MR_small.dcm", "modality MR"]),
    "JPEG-lossy NM": lambda c: ([c["run"], LOSSY], ["JPEG-lossy.dcm", "cannot decode"]),
    "colour PNG": lambda c: ([c["run"], c["colour"]], ["colour.png", "colour image"]),
    "decompression bomb": lambda c: ([c["run"], c["bomb"]], ["bomb.png", "decompression bomb"]),
    "12000x14000 image": lambda c: ([c["run"], c["huge"]], ["huge.png", "larger than"]),
    "2x2 image": lambda c: ([c["run"], c["tiny"]], ["tiny.png", "too small"]),
    "all-zero image": lambda c: ([c["run"], c["zeros"]], ["zeros.png", "every pixel is 0"]),
    "1-bit image": lambda c: ([c["run"], c["one_bit"]], ["onebit.png", "1-bit"]),
    "views of two sizes": lambda c: ([c["run"], c["pair_sizes"]], ["s1_ant.png", "differ in size"]),
    "not a PNG": lambda c: ([c["run"], c["not_png"]], ["text.png", "not a readable image"]),
    "corrupt DICOM": lambda c: ([c["run"], c["corrupt_dcm"]], ["corrupt.dcm", "not a readable dicom"]),
    "report, not an image": lambda c: ([c["run"], _report(c)], ["report.dcm", "not an image"]),
    "input missing": lambda c: ([c["run"], c["tmp"] / "gone.dcm"], ["gone.dcm", "no such file"]),
    "empty input folder": lambda c: ([c["run"], c["tmp"] / "empty"], ["empty", "no dicom or image files"]),
    "-o in an unwritable folder": lambda c: ([c["run"], c["nm"], "-o", c["unwritable"] / "p.csv"],
                                             ["p.csv", "cannot write"]),
    "-o under a file": lambda c: ([c["run"], c["nm"], "-o", c["a_file"] / "sub" / "p.csv"], ["plain-file"]),
    "-o is a folder": lambda c: ([c["run"], c["nm"], "-o", _folder(c, "a-folder.csv")], ["a-folder.csv", "is a folder"]),
    "--explain onto a file": lambda c: ([c["run"], c["nm"], "--explain", c["a_file"]], ["plain-file"]),
    "--explain in an unwritable folder": lambda c: ([c["run"], c["nm"], "--explain", c["unwritable"] / "cams"],
                                                    ["cams", "cannot write"]),
    "--explain with a TFLite model": lambda c: ([c["random_tflite"], c["nm"], "--explain", c["tmp"] / "x"],
                                                ["random.tflite"]),
    "PACS unreachable": lambda c: ([c["run"], "--dicomweb", "http://127.0.0.1:1/dicom-web", "--study", "1.2.3"],
                                   ["127.0.0.1:1", "failed"]),
    "--study without --dicomweb": lambda c: ([c["run"], CT, "--study", "1.2.3"], ["--study", "--dicomweb"]),
    "neither PATHS nor a PACS": lambda c: ([c["run"]], ["paths", "--dicomweb"]),
    "--query not KEY=VALUE": lambda c: ([c["run"], "--dicomweb", "http://127.0.0.1:1/dicom-web", "--query",
                                         "StudyDate"], ["StudyDate", "KEY=VALUE"]),
    "empty --secret-file": lambda c: ([c["run"], c["nm"], "--secret-file", _empty_file(c, "secret")],
                                      ["secret", "is empty"]),
}


def _empty_file(c, name):
    (c["tmp"] / name).write_text("\n")
    return c["tmp"] / name


@pytest.mark.parametrize("name", PREDICT)
def test_predict_fault(name, ctx):
    run_case(PREDICT, name, ctx, ["predict"])


def test_any_modality_says_the_results_mean_nothing(monkeypatch, capsys):
    from tfbonemet.errors import DataError
    from tfbonemet.io import dicom

    monkeypatch.setenv(dicom.ANY_MODALITY_ENV, "1")
    monkeypatch.setattr(dicom, "_warned_modalities", set())
    for path in (CT, CT, MR):
        try:
            dicom.read_views(path)
        except DataError:
            pass  # one slice is no anterior/posterior pair: what matters is that it was read, and said so
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 2 and "CT" in warnings[0] and "MR" in warnings[1]
    assert all("mean nothing" in line for line in warnings)


def test_absl_warnings_do_not_come_before_an_error(ctx):
    import logging

    assert_one_error(["export", ctx["run"] / "nowhere"], "nowhere")
    assert not logging.getLogger("absl").isEnabledFor(logging.WARNING)
    assert logging.getLogger("absl").isEnabledFor(logging.ERROR)


def test_an_undecodable_dicom_logs_nothing_beside_its_error(ctx, caplog):
    """pydicom logs each decoder's failure with a traceback; only the one Error line may reach the user."""
    with caplog.at_level("DEBUG"):
        run_case(PREDICT, "JPEG-lossy NM", ctx, ["predict"])
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pydicom")] == []


# ---------------------------------------------------------------- data build

def _dicom_layout(c, name: str, labels: str | None = None, extra: str | None = None) -> Path:
    """A copy of the phantom DICOM manual dir with other labels, or with one more (labelled) file."""
    root = c["tmp"] / "build" / name
    if not root.exists():
        shutil.copytree(c["nm"], root)
    if extra is not None:
        shutil.copy(extra, root / Path(extra).name)
        labels = f"file,label\n{Path(extra).name},metastasis\n"
    if labels is not None:
        (root / "labels.csv").write_bytes(labels.encode("latin-1"))
    return root


def _first_dcm(c) -> str:
    return sorted(p.name for p in c["nm"].glob("*.dcm"))[0]


def _manifest(c, name: str, anterior: str, posterior: str | None = None, patient: str = "P1") -> Path:
    """A manifest.csv manual dir (real-data layout: no phantom mark) naming these two views."""
    root = c["tmp"] / "build" / name
    root.mkdir(parents=True, exist_ok=True)
    front, back = Path(c[anterior]), Path(c[posterior or anterior])
    for path in {front, back}:
        shutil.copy(path, root / path.name)
    (root / "manifest.csv").write_text(f"anterior,posterior,label,patient_id\n{front.name},{back.name},"
                                       f"metastasis,{patient}\n")
    return root


def _bs80k(c, name: str, change) -> Path:
    root = c["tmp"] / "build" / name
    if not root.exists():
        shutil.copytree(DUMMY / "bs80k", root)
        change(root)
    return root


def _add_line(root: Path):
    listing = root / "chestRANT" / "chestRANT.txt"
    listing.write_text(listing.read_text() + "0009.jpg maybe\n")


def _lesions(c) -> Path:
    root = _dicom_layout(c, "lesions")
    (root / "lesions.json").write_text('{"1.2.3": [{"kind": "metastasis"}]}')
    return root


def _notes(c) -> Path:
    root = _folder(c, "notes")
    (root / "readme.txt").write_text("hello")
    return root


BUILD = {
    "empty manual dir": lambda c: ([c["tmp"] / "empty"], ["empty", "is empty"]),
    "no known layout": lambda c: ([_notes(c)], ["notes", "no recognised layout"]),
    "labels.csv without label column": lambda c: ([_dicom_layout(c, "no-label", "file,diagnosis\nx.dcm,1\n")],
                                                  ["labels.csv", "missing column"]),
    "unknown label": lambda c: ([_dicom_layout(c, "unknown-label", f"file,label\n{_first_dcm(c)},fracture\n")],
                                ["labels.csv:2", "unknown label"]),
    "label names a missing file": lambda c: ([_dicom_layout(c, "missing-file", "file,label\nnone.dcm,normal\n")],
                                             ["labels.csv:2", "none.dcm"]),
    "header-only labels.csv": lambda c: ([_dicom_layout(c, "header-only", "file,label\n")], ["labels.csv", "no rows"]),
    "labels.csv not UTF-8": lambda c: ([_dicom_layout(c, "latin1", "file,label\n\xe9\xff.dcm,normal\n")],
                                       ["labels.csv", "cannot read csv"]),
    "CT in a DICOM layout": lambda c: ([_dicom_layout(c, "ct", extra=CT)], ["CT_small.dcm", "modality CT"]),
    "MR in a DICOM layout": lambda c: ([_dicom_layout(c, "mr", extra=MR)], ["MR_small.dcm", "modality MR"]),
    "JPEG-lossy in a DICOM layout": lambda c: ([_dicom_layout(c, "lossy", extra=LOSSY)],
                                               ["JPEG-lossy.dcm", "cannot decode"]),
    "malformed lesions.json": lambda c: ([_lesions(c)], ["lesions.json", "not a lesion list"]),
    "colour image": lambda c: ([_manifest(c, "m-colour", "colour")], ["colour.png", "colour image"]),
    "decompression bomb": lambda c: ([_manifest(c, "m-bomb", "bomb")], ["bomb.png", "decompression bomb"]),
    "12000x14000 image": lambda c: ([_manifest(c, "m-huge", "huge")], ["huge.png", "larger than"]),
    "2x2 image": lambda c: ([_manifest(c, "m-tiny", "tiny")], ["tiny.png", "too small"]),
    "all-zero image": lambda c: ([_manifest(c, "m-zeros", "zeros")], ["zeros.png", "every pixel is 0"]),
    "1-bit image": lambda c: ([_manifest(c, "m-onebit", "one_bit")], ["onebit.png", "1-bit"]),
    "not an image": lambda c: ([_manifest(c, "m-text", "not_png")], ["text.png", "not a readable image"]),
    "views of two sizes": lambda c: ([_manifest(c, "m-sizes", "pair_ant", "pair_post")],
                                     ["manifest.csv:2", "differ in size"]),
    "empty patient_id": lambda c: ([_manifest(c, "m-no-patient", "scan", patient="")],
                                   ["manifest.csv:2", "empty patient_id"]),
    "BS-80K bad label line": lambda c: ([_bs80k(c, "bs80k-line", _add_line)], ["chestRANT.txt", "'filename label'"]),
    "BS-80K missing label list": lambda c: ([_bs80k(c, "bs80k-list",
                                                    lambda r: (r / "chestRPOST" / "chestRPOST.txt").unlink())],
                                            ["chestRPOST", "missing its label list"]),
    "multiclass build of binary-only labels": lambda c: ([DUMMY / "bs80k", "--config", "multiclass"],
                                                         ["no_metastasis", "binary config"]),
    "--data-dir in an unwritable folder": lambda c: ([c["nm"], "--data-dir", c["unwritable"] / "tfds"],
                                                     ["tfds", "cannot write"]),
    "--data-dir under a file": lambda c: ([c["nm"], "--data-dir", c["a_file"] / "tfds"], ["plain-file"]),
    "--config for chest_xray": lambda c: ([c["nm"], "--config", "binary", "--dataset", "chest_xray"],
                                          ["--config", "chest_xray"]),
}


@pytest.mark.parametrize("name", BUILD)
def test_data_build_fault(name, ctx, secret):
    args, words = BUILD[name](ctx)
    data_dir = [] if "--data-dir" in args else ["--data-dir", ctx["tmp"] / "tfds"]
    dataset = [] if "--dataset" in args else ["--dataset", "bone_scintigraphy"]
    assert_one_error(["data", "build", *dataset, "--manual-dir", *args, *data_dir], *words)


def test_real_data_need_a_secret(ctx, monkeypatch):
    for name in ("TFBONEMET_SECRET", "TFBONEMET_SECRET_FILE", "TFBONEMET_SALT"):
        monkeypatch.delenv(name, raising=False)
    real = _manifest(ctx, "real", "scan")
    build = ["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", real, "--data-dir", ctx["tmp"] / "t"]
    assert_one_error(build, "real", "no site secret", "--allow-public-secret")
    assert_one_error([*build, "--secret-file", _empty_file(ctx, "empty-secret")], "empty-secret", "is empty")


def test_a_phantom_mark_is_no_way_around_the_secret(ctx, monkeypatch):
    """A phantom mark copied into a folder of real data, or a file added beside the phantom's: the
    folder is real data, and real data need a site secret."""
    for name in ("TFBONEMET_SECRET", "TFBONEMET_SECRET_FILE", "TFBONEMET_SALT"):
        monkeypatch.delenv(name, raising=False)
    real = _manifest(ctx, "real-marked", "scan")
    shutil.copy(DUMMY / "manifest" / ".tfbonemet-phantom", real)
    grown = ctx["tmp"] / "build" / "phantom-grown"
    shutil.copytree(DUMMY / "manifest", grown)
    shutil.copy(ctx["scan"], grown / "images" / "real.png")
    for folder in (real, grown):
        assert_one_error(["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", folder, "--data-dir",
                          ctx["tmp"] / "t"], folder.name, "no site secret")


# ---------------------------------------------------------------- data phantom

def _holding(c, name: str, file: str, text: str = "") -> Path:
    root = _folder(c, name)
    (root / file).write_text(text)
    return root


PHANTOM = {
    "into a dataset": lambda c: ([_holding(c, "held", "labels.csv", "file,label\n")], ["held", "already holds"]),
    "into a non-empty folder": lambda c: ([_holding(c, "busy", "scan.dcm")], ["busy", "not empty"]),
    "into an unwritable folder": lambda c: ([c["unwritable"] / "phantom"], ["phantom", "cannot write"]),
    "onto a file": lambda c: ([c["a_file"]], ["plain-file"]),
    "size below 64 rows": lambda c: ([c["tmp"] / "small", "--size", "16", "16"], ["--size"]),
    "no studies": lambda c: ([c["tmp"] / "none", "--num-studies", "0"], ["--num-studies", "0"]),
}


@pytest.mark.parametrize("name", PHANTOM)
def test_data_phantom_fault(name, ctx):
    run_case(PHANTOM, name, ctx, ["data", "phantom"])
    held = ctx["tmp"] / "held" / "labels.csv"
    assert not held.exists() or held.read_text() == "file,label\n"  # a dataset is never rewritten


# ---------------------------------------------------------------- fit and cv (refused before training)

SMALL = ["--num-studies", "16", "--image-size", "64", "32", "--epochs", "1"]


def _config(c, name: str, text: str) -> Path:
    (c["tmp"] / name).write_text(text)
    return c["tmp"] / name


FIT = {
    "--run-name escaping": lambda c: (["--run-name", "../../x"], ["../../x", "plain folder name"]),
    "config with a wrong type": lambda c: (["--config", _config(c, "c.json", '{"batch_size": "abc"}')],
                                           ["batch_size", "abc"]),
    "config not JSON": lambda c: (["--config", _config(c, "bad.json", "{oops")], ["bad.json", "not valid json"]),
    "config with an unknown key": lambda c: (["--config", _config(c, "k.yaml", "bogus: 1\n")], ["k.yaml", "bogus"]),
    "config a list": lambda c: (["--config", _config(c, "l.yaml", "- 1\n- 2\n")], ["l.yaml", "mapping"]),
    "config missing": lambda c: (["--config", c["tmp"] / "none.yaml"], ["none.yaml", "cannot read"]),
    "learning rate 1e12": lambda c: (["--learning-rate", "1e12"], ["learning_rate", "diverge"]),
    "batch larger than the data": lambda c: (["--batch-size", "100000"], ["batch size", "larger than"]),
    "unknown data source": lambda c: (["--data", "nonsense"], ["nonsense", "not supported"]),
    "TFDS dataset not built": lambda c: (["--data", "tfds:bone_scintigraphy/binary", "--data-dir",
                                          c["tmp"] / "no-tfds"], ["bone_scintigraphy", "not built"]),
    "unknown model option": lambda c: (["--model-option", "bogus=1"], ["bogus"]),
    "model option of the wrong type": lambda c: (["--model-option", "filters=abc"], ["filters", "abc", "list"]),
    "model option not a number": lambda c: (["--model-option", "dropout=high"], ["dropout", "high", "number"]),
    "model option not KEY=VALUE": lambda c: (["--model-option", "bogus"], ["bogus", "KEY=VALUE"]),
    "image size below 32": lambda c: (["--image-size", "16", "16"], ["--image-size", "16"]),
    "32x32 image size on the phantom": lambda c: (["--image-size", "32", "32"], ["32x32", "phantom"]),
    "output dir unwritable": lambda c: (["--output-dir", c["unwritable"] / "runs"], ["runs", "cannot write"]),
    "output dir is a file": lambda c: (["--output-dir", c["a_file"]], ["plain-file", "not a folder"]),
    "head epochs leave no fine-tuning": lambda c: (["--init-backbone", c["random_keras"], "--head-epochs", "5"],
                                                   ["head_epochs"]),
}


@pytest.mark.parametrize("name", FIT)
def test_fit_fault(name, ctx):
    run_case(FIT, name, ctx, ["fit", *SMALL, "--output-dir", ctx["tmp"] / "runs"])
    assert not (ctx["tmp"] / "runs").exists() or not any((ctx["tmp"] / "runs").iterdir())  # no run left behind


RESUME = {
    "resume a folder that is no run": lambda c: ([_folder(c, "not-a-run")], ["not-a-run", "not a run directory"]),
    "resume with other options": lambda c: ([_folder(c, "not-a-run"), "--epochs", "3"], ["--epochs"]),
    "resume a finished run": lambda c: ([c["run"]], ["already finished"]),
}


@pytest.mark.parametrize("name", RESUME)
def test_resume_fault(name, ctx):
    run_case(RESUME, name, ctx, ["fit", "--resume"])


def _labels_naming_a_missing_file(c) -> Path:
    folder = _folder(c, "xrays-listed")
    (folder / "labels.csv").write_text("file,label\nmissing.png,PNEUMONIA\n")
    return folder


PRETRAIN = {
    "chest X-rays not built": lambda c: (["--data-dir", c["tmp"] / "no-xrays"], ["chest_xray", "not built"]),
    "empty folder of X-rays": lambda c: (["--data-dir", c["tmp"] / "xrays-1", "--manual-dir",
                                          _folder(c, "no-images")], ["no-images", "is empty", "nothing to build"]),
    "labels.csv naming a missing image": lambda c: (["--data-dir", c["tmp"] / "xrays-2", "--manual-dir",
                                                     _labels_naming_a_missing_file(c)], ["labels.csv", "missing.png"]),
    "bone scans instead of X-rays": lambda c: (["--data", "tfds:bone_scintigraphy/binary"],
                                               ["bone_scintigraphy", "chest x-ray"]),
    "output dir unwritable": lambda c: (["--output-dir", c["unwritable"] / "runs", "--data-dir",
                                         c["tmp"] / "no-xrays"], ["runs", "cannot write"]),
    "learning rate 1e12": lambda c: (["--learning-rate", "1e12"], ["learning_rate", "diverge"]),
    "--run-name escaping": lambda c: (["--run-name", "../../x"], ["../../x", "plain folder name"]),
}


@pytest.mark.parametrize("name", PRETRAIN)
def test_pretrain_fault(name, ctx, secret):
    run_case(PRETRAIN, name, ctx, ["pretrain", "--epochs", "1", "--image-size", "64", "32", "--output-dir",
                                   ctx["tmp"] / "pretrain-runs"])
    assert not (ctx["tmp"] / "pretrain-runs").exists()  # refused before any run directory


def _dead_pid() -> int:
    """The process id of a process that has ended (what a killed run's temporary names hold)."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_resume_of_a_run_killed_as_it_ended_removes_what_it_left(ctx, tmp_path):
    """Killed after metrics.json appeared: the run is finished, and --resume removes best.keras, backup/
    and the killed save's temporary file instead of keeping them."""
    run = tmp_path / "run"
    shutil.copytree(ctx["run"], run)
    model, metrics = (run / "model.keras").read_bytes(), (run / "metrics.json").read_text()
    shutil.copy(run / "model.keras", run / "best.keras")
    (run / "backup" / "train").mkdir(parents=True)
    (run / "backup" / "train" / "training_metadata.json").write_text('{"epoch": 2}')
    (run / f".model.{_dead_pid()}.part.keras").write_bytes(b"")
    result = CliRunner().invoke(cli, ["fit", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "removed" in result.output
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in ctx["run"].iterdir())
    assert (run / "model.keras").read_bytes() == model and (run / "metrics.json").read_text() == metrics
    assert_one_error(["fit", "--resume", run], "already finished")  # nothing more to do


def test_resume_removes_the_temporary_file_of_a_killed_save(ctx, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ctx["run"], run)
    (run / "model.keras").unlink()
    (run / "metrics.json").unlink()
    stale = run / f".model.{_dead_pid()}.part.keras"
    stale.write_bytes(b"")
    result = CliRunner().invoke(cli, ["fit", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "metrics.json").is_file() and not stale.exists()
    assert [p.name for p in run.glob(".*")] == []


def test_refused_cv_leaves_no_folder(ctx):
    """A fold refused before it trains (here: the batch is larger than a fold's training studies)."""
    out = ctx["tmp"] / "cv-refused"
    assert_one_error(["cv", "--folds", "4", *SMALL, "--batch-size", "16", "--output-dir", out], "batch size")
    assert not out.exists() or list(out.iterdir()) == []


# ---------------------------------------------------------------- damaged builds

DATA = "tfds:bone_scintigraphy/binary"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small built dataset (data phantom, then data build)."""
    root = tmp_path_factory.mktemp("built")
    for args in (["data", "phantom", root / "source", "--num-studies", "40", "--size", "64", "16"],
                 ["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", root / "source", "--data-dir",
                  root / "tfds"]):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    return root / "tfds"


def _version(data_dir: Path) -> Path:
    return data_dir / "bone_scintigraphy" / "binary" / "1.0.0"


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_bit(path: Path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _miscount(path: Path):
    info = path.parent / "dataset_info.json"
    text = json.loads(info.read_text())
    for split in text["splits"]:
        split["shardLengths"] = [str(int(n) - 1) for n in split["shardLengths"]]
    info.write_text(json.dumps(text))


DAMAGED_BUILDS = {"truncated shard": (_truncate, ["damaged record file", "truncated"]),
                  "bit-flipped shard": (_flip_a_bit, ["damaged record file", "corrupted"]),
                  "dataset_info.json miscounting": (_miscount, ["dataset_info.json", "no longer matches"])}


def _damaged_build(built: Path, tmp: Path, damage: str, split: str) -> tuple[Path, str]:
    copy = tmp / "tfds"
    shutil.copytree(built, copy)
    shard = next(_version(copy).glob(f"*-{split}.tfrecord-*"))
    DAMAGED_BUILDS[damage][0](shard)
    return copy, shard.name


@pytest.mark.parametrize("damage", DAMAGED_BUILDS)
def test_fit_refuses_a_damaged_build(damage, built, tmp_path):
    data_dir, shard = _damaged_build(built, tmp_path, damage, "train")
    words = [shard, *DAMAGED_BUILDS[damage][1], "data build", str(data_dir)]
    assert_one_error(["fit", "--data", DATA, "--data-dir", data_dir, "--epochs", "1", "--batch-size", "4",
                      "--output-dir", tmp_path / "runs"], *words)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_evaluate_refuses_a_build_damaged_after_training(built, tmp_path):
    data_dir = tmp_path / "tfds"
    shutil.copytree(built, data_dir)
    result = CliRunner().invoke(cli, [str(a) for a in ["fit", "--data", DATA, "--data-dir", data_dir, "--epochs", "1",
                                                       "--batch-size", "4", "--model-option", "filters=[8,16]",
                                                       "--output-dir", tmp_path, "--run-name", "run"]])
    assert result.exit_code == 0, result.output
    shard = next(_version(data_dir).glob("*-test.tfrecord-*"))
    _flip_a_bit(shard)
    assert_one_error(["evaluate", tmp_path / "run", "--bootstrap", "10"], shard.name, "damaged", "data build")
    assert not (tmp_path / "run" / "eval-test").exists()


@pytest.mark.parametrize("content", [b"{oops", b"[]", b'{"splits": "x"}'], ids=["not JSON", "a list", "no splits"])
def test_a_damaged_dataset_description_is_named(content, built, tmp_path):
    data_dir = tmp_path / "tfds"
    shutil.copytree(built, data_dir)
    info = _version(data_dir) / "dataset_info.json"
    info.write_bytes(content)
    words = [str(info), "damaged dataset description", f"remove {_version(data_dir)}", "data build"]
    assert_one_error(["fit", "--data", DATA, "--data-dir", data_dir, "--epochs", "1", "--batch-size", "4",
                      "--output-dir", tmp_path / "runs"], *words)
    assert_one_error(["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", built.parent / "source",
                      "--data-dir", data_dir], *words)
    assert info.read_bytes() == content  # named, never rebuilt over or trained on
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_missing_record_file_is_named(built, tmp_path):
    data_dir = tmp_path / "tfds"
    shutil.copytree(built, data_dir)
    shard = next(_version(data_dir).glob("*-train.tfrecord-*"))
    shard.unlink()
    assert_one_error(["fit", "--data", DATA, "--data-dir", data_dir, "--epochs", "1", "--batch-size", "4",
                      "--output-dir", tmp_path / "runs"], str(shard), "missing", "dataset_info.json", "data build")


# ---------------------------------------------------------------- tasks that load a run

def _damaged(c, name: str, file: str, content: bytes | None) -> Path:
    run = c["tmp"] / "damaged" / name
    if not run.exists():
        shutil.copytree(c["run"], run)
        (run / file).unlink() if content is None else (run / file).write_bytes(content)
    return run


def _wrong_type(c) -> bytes:
    return json.dumps({**json.loads((c["run"] / "config.json").read_text()), "batch_size": "abc"}).encode()


DAMAGE = {
    "config.json with a wrong type": (lambda c: _damaged(c, "wrong-type", "config.json", _wrong_type(c)),
                                      ["config.json", "batch_size"]),
    "config.json not JSON": (lambda c: _damaged(c, "not-json", "config.json", b"{oops"), ["config.json"]),
    "random-bytes model.keras": (lambda c: _damaged(c, "random", "model.keras", os.urandom(2048)), ["model.keras"]),
    "truncated model.keras": (lambda c: _damaged(c, "truncated", "model.keras",
                                                 (c["run"] / "model.keras").read_bytes()[:3000]),
                              ["model.keras", "truncated"]),
    "no model.keras": (lambda c: _damaged(c, "no-model", "model.keras", None), ["model.keras"]),
    "missing run": (lambda c: c["tmp"] / "nowhere", ["nowhere"]),
}
CONSUMERS = {"evaluate": ["--bootstrap", "10"], "explain": ["--num", "1"], "export": ["--format", "savedmodel"]}


@pytest.mark.parametrize("command", CONSUMERS)
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_run_fault(command, damage, ctx):
    make, words = DAMAGE[damage]
    out = ["--output-dir", ctx["tmp"] / f"out-{command}"]
    assert_one_error([command, make(ctx), *CONSUMERS[command], *out], *words)


OTHERS = {
    "evaluate into an unwritable folder": lambda c: (["evaluate", c["run"], "--bootstrap", "10", "--output-dir",
                                                      c["unwritable"] / "eval"], ["eval", "cannot write"]),
    "explain into an unwritable folder": lambda c: (["explain", c["run"], "--num", "1", "--output-dir",
                                                     c["unwritable"] / "cams"], ["cams", "cannot write"]),
    "explain a CT file": lambda c: (["explain", c["run"], "--dicom", CT, "--output-dir", c["tmp"] / "x"],
                                    ["CT_small.dcm", "modality CT"]),
    "export onto a file": lambda c: (["export", c["run"], "--output-dir", c["a_file"]], ["plain-file"]),
    "unknown model name": lambda c: (["models", "no_such_net"], ["no_such_net"]),
    "cv with one fold": lambda c: (["cv", "--folds", "1"], ["--folds", "1"]),
    "cv with --run-name escaping": lambda c: (["cv", "--folds", "2", *SMALL, "--run-name", "../x", "--output-dir",
                                               c["tmp"] / "cv"], ["../x", "plain folder name"]),
}


@pytest.mark.parametrize("name", OTHERS)
def test_other_fault(name, ctx):
    run_case(OTHERS, name, ctx, [])


def test_evaluate_refuses_an_unwritable_output_before_predicting(ctx):
    result = CliRunner().invoke(cli, ["evaluate", str(ctx["run"]), "--bootstrap", "10", "--output-dir",
                                      str(ctx["unwritable"] / "eval")])
    assert result.exit_code == 1 and "cannot write" in result.output
    assert "Predicting" not in result.output and "Bootstrapping" not in result.output


# Commands with no case here, and why; any other command must have bad-input cases above.
WITHOUT_FAULT_CASES = {
    "presets": "lists the shipped presets or prints one; reads no file of the user's",
}


def test_every_command_meets_bad_input():
    """Every command a user can run has bad-input cases above, or is listed with the reason it has none."""
    import click

    def commands(group, prefix=""):
        for name, command in group.commands.items():
            yield from (commands(command, f"{prefix}{name} ") if isinstance(command, click.Group)
                        else [prefix + name])

    covered = {"predict", "data build", "data phantom", "fit", "pretrain", *CONSUMERS, "models", "cv"}
    assert set(commands(cli)) - covered == set(WITHOUT_FAULT_CASES)


# ---------------------------------------------------------------- what killed processes left

@pytest.fixture
def held_by_another():
    """Hold lock files as a live tfbonemet process would (flock conflicts between open files, even in one
    process); released at the end of the test."""
    import fcntl

    handles = []

    def hold(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "w")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handles.append(handle)
        return path
    yield hold
    for handle in handles:
        handle.close()


def _killed_export(output_dir: Path, model: str) -> list[Path]:
    """What an export of `model` killed mid-way leaves: its staging folder and its lock file."""
    staging = output_dir / model / f".export.{_dead_pid()}.k1ll3d"
    staging.mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"half")
    lock = output_dir / f".{model}.export.lock"
    lock.write_text("0\n")
    return [output_dir / model, lock]


def test_the_next_export_clears_what_killed_exports_left(ctx, tmp_path, held_by_another):
    out = tmp_path / "models"
    left = _killed_export(out, "other_model")
    busy = out / "busy_model" / f".export.{os.getpid()}.runs"  # a live export of another model
    busy.mkdir(parents=True)
    held_by_another(out / ".busy_model.export.lock")
    result = CliRunner().invoke(cli, ["export", str(ctx["run"]), "--output-dir", str(out), "--format", "savedmodel",
                                      "--model-name", "this_model"])
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in left), result.output
    assert (out / "this_model" / "1" / "saved_model.pb").is_file()
    assert busy.is_dir()
    assert sorted(p.name for p in out.iterdir()) == [".busy_model.export.lock", "busy_model", "this_model"]


def test_the_next_predictions_in_a_folder_clear_what_killed_ones_left(ctx, tmp_path, held_by_another):
    out = tmp_path / "predictions"
    out.mkdir()
    left = [out / f".killed.csv.{_dead_pid()}.a1b2c3d4.part", out / ".killed.csv.lock"]
    left[0].write_text("half a file")
    left[1].write_text(f"{_dead_pid()}\n")
    busy = [out / f".busy.csv.{_dead_pid()}.e5f6g7h8.part", held_by_another(out / ".busy.csv.lock")]
    busy[0].write_text("a live process on another machine writes this")
    result = CliRunner().invoke(cli, ["predict", str(ctx["run"]), str(ctx["nm"]), "-o", str(out / "new.csv")])
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in busy)
    assert sorted(p.name for p in out.iterdir()) == sorted([busy[0].name, ".busy.csv.lock", "new.csv"])


def test_the_next_build_in_a_data_dir_clears_what_killed_builds_left(built, tmp_path, held_by_another):
    data_dir = tmp_path / "tfds"
    killed = data_dir / "bone_scintigraphy" / "multiclass"
    (killed / "incomplete.K1LLED_1.0.0").mkdir(parents=True)
    (killed / "incomplete.K1LLED_1.0.0" / "bone_scintigraphy-train.tfrecord-00000-of-00001").write_bytes(b"half")
    (killed / ".building.lock").write_text("0\n")
    busy = data_dir / "other_dataset" / "incomplete.BUSY_1.0.0"
    busy.mkdir(parents=True)
    held_by_another(busy.parent / ".building.lock")
    result = CliRunner().invoke(cli, ["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir",
                                      str(built.parent / "source"), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert not killed.exists()  # a killed first build: nothing of it stays
    assert busy.is_dir()
    assert (_version(data_dir) / "dataset_info.json").is_file()


def _killed_fit(run: Path) -> list[Path]:
    """What a fit killed as it ended leaves in its finished run: best.keras, backup/ and a temporary save."""
    shutil.copy(run / "model.keras", run / "best.keras")
    (run / "backup" / "train").mkdir(parents=True)
    (run / "backup" / "train" / "training_metadata.json").write_text('{"epoch": 2}')
    (run / f".model.{_dead_pid()}.part.keras").write_bytes(b"")
    return [run / "best.keras", run / "backup", next(run.glob(".model.*.part.keras"))]


@pytest.mark.parametrize("command", ["evaluate", "explain", "fit"])
def test_the_next_command_writing_by_a_run_clears_what_a_killed_fit_left(command, ctx, tmp_path, held_by_another):
    runs = tmp_path / "runs"
    run, busy = runs / "killed", runs / "training"
    shutil.copytree(ctx["run"], run)
    shutil.copytree(ctx["run"], busy)
    left, kept = _killed_fit(run), _killed_fit(busy)
    held_by_another(busy / ".tfbonemet.lock")  # a live process still trains or finishes that run
    (runs / "ghost").mkdir()  # a fit killed before it wrote anything
    (runs / "ghost" / ".tfbonemet.lock").write_text("0\n")
    model = (run / "model.keras").read_bytes()
    args = {"evaluate": ["evaluate", run, "--bootstrap", "10"],
            "explain": ["explain", run, "--num", "1"],
            "fit": ["fit", *SMALL, "--batch-size", "4", "--model-option", "filters=[4,8]", "--output-dir", runs,
                    "--run-name", "new"]}
    result = CliRunner().invoke(cli, [str(a) for a in args[command]])
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in left), result.output
    assert all(path.exists() for path in kept)
    assert (run / "model.keras").read_bytes() == model and not (run / ".tfbonemet.lock").exists()
    assert (runs / "ghost").exists() == (command != "fit")  # evaluate and explain tidy only their own run


def test_a_leftover_is_removed_only_when_its_process_is_gone(tmp_path):
    from tfbonemet.io.lock import sweep

    alive = [tmp_path / f".results.2024.csv.{os.getpid()}.x.part", tmp_path / f".model.{os.getppid()}.part.keras"]
    dead = [tmp_path / f".results.2024.csv.{_dead_pid()}.y.part", tmp_path / ".p.csv.lock"]
    for path in alive + dead:
        path.write_text("")
    assert sorted(sweep(tmp_path)) == sorted(dead)
    assert sorted(tmp_path.iterdir()) == sorted(alive)


def test_another_programs_files_are_never_swept(tmp_path):
    from tfbonemet.io.lock import sweep

    foreign = [tmp_path / ".editor.lock", tmp_path / ".download.part"]
    foreign[0].write_text("host=laptop user=someone\n")
    foreign[1].write_text("a download in progress")
    assert sweep(tmp_path) == []
    assert sorted(tmp_path.iterdir()) == sorted(foreign)

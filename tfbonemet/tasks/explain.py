"""`tfbonemet explain`: per-view class-activation maps (tf-keras-vis) overlaid on the views, as PNG or DICOM.

Each view gets its own map from its own feature layer (`anterior_features` / `posterior_features`
in two-view nets), so a lesion seen only on the posterior view is not smeared across both. Maps
are computed in the model's input frame (cropped, posterior mirrored, resized, padded) and mapped
back to each view's acquired orientation and pixel grid by the run's ScanPreprocessor inverse.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from scipy import ndimage

from tfbonemet.errors import ModelError
from tfbonemet.vocab import model_input_names

METHODS = ("gradcam", "gradcam++", "scorecam")
VIEW_LABELS = {"anterior": "anterior", "posterior": "posterior (as acquired)", "image": "image"}


def _visualizer(method: str):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.scorecam import Scorecam

    return {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "scorecam": Scorecam}[method]


def target_layers(model, registry_name: str | None = None) -> dict[str, str]:
    """Model input name -> the 4-D layer whose maps explain that input.

    Order of preference: per-view `<input>_features` layers, the registry's `gradcam_layers` (of
    `registry_name`, else of any registered model whose layers this model has), then the last
    top-level layer with a 4-D output (a nested backbone model cannot serve: its inner tensors
    are not reachable from the outer inputs).
    """
    import keras

    from tfbonemet.models import MODELS

    names = model_input_names(model)
    layers = {layer.name: layer for layer in model.layers}
    per_view = {n: f"{n}_features" for n in names if f"{n}_features" in layers}
    if len(per_view) == len(names):
        return per_view
    specs = [MODELS[registry_name]] if registry_name in MODELS else list(MODELS.values())
    for spec in specs:
        registered = tuple(getattr(spec, "gradcam_layers", ()) or ())
        if len(registered) == len(names) and all(v in layers for v in registered):
            return dict(zip(names, registered))
    if len(names) == 1:
        for layer in reversed(model.layers):
            if isinstance(layer, (keras.Model, keras.layers.InputLayer)):
                continue
            if len(layer.output.shape) == 4:
                return {names[0]: layer.name}
    raise ModelError(f"cannot find a feature-map layer to explain each input of model {model.name!r} "
                     f"(inputs {names}); name them `<input>_features` or register gradcam_layers")


def class_activation_maps(model, inputs: dict[str, np.ndarray], class_index: int, method: str = "gradcam",
                          scorecam_max_n: int = 32, normalise: bool = True,
                          registry_name: str | None = None) -> dict[str, np.ndarray]:
    """Input name -> maps (N, H, W) in [0, 1] for `class_index`, computed on the class logit.

    The softmax is replaced by a linear output on a clone (tf-keras-vis ReplaceToLinear), so
    saturated probabilities do not flatten the gradients; Score-CAM applies its own softmax.
    """
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    if method not in METHODS:
        raise ModelError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
    names = model_input_names(model)
    seeds = [np.asarray(inputs[n], np.float32) for n in names]
    visualizer = _visualizer(method)(model, model_modifier=ReplaceToLinear(), clone=True)
    maps = {}
    for index, (name, layer) in enumerate(target_layers(model, registry_name).items()):
        options = {"max_N": min(scorecam_max_n, model.get_layer(layer).output.shape[-1])} \
            if method == "scorecam" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # keras: list given for dict inputs (same order)
            cams = visualizer(lambda output: output[:, class_index], seeds, penultimate_layer=layer,
                              seek_penultimate_conv_layer=False, normalize_cam=normalise, **options)
        maps[name] = np.nan_to_num(np.asarray(cams[index], np.float32))
    return maps


def display_counts(counts: np.ndarray) -> np.ndarray:
    """Counts -> [0, 1] grey levels: square root (Poisson-stabilising) up to the 99.5th percentile."""
    counts = np.asarray(counts, np.float64)
    top = max(np.percentile(counts, 99.5), 1.0)
    return np.sqrt(np.clip(counts / top, 0, 1))


def overlay_rgb(counts: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Inverted-grey view (hot = dark, as read on a bone scan) blended with a jet heat map, uint8 RGB."""
    from matplotlib import colormaps

    grey = 1.0 - display_counts(counts)
    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    weight = alpha * np.clip(cam, 0, 1)[..., None]
    rgb = (1 - weight) * grey[..., None] + weight * heat
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


@dataclasses.dataclass
class Explanation:
    """One study's views (raw counts, as acquired) and per-view maps in the same frames."""

    name: str
    views: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]
    probability: float
    class_name: str
    boxes: list = dataclasses.field(default_factory=list)  # known lesions (phantom), anterior (y0, x0, y1, x1)

    def composite(self, gap: int = 8) -> np.ndarray:
        """The overlays side by side (anterior | posterior), uint8 RGB, for DICOM or quick viewing."""
        panels = [overlay_rgb(self.views[v], self.maps[v]) for v in self.views]
        height = max(p.shape[0] for p in panels)
        spacer = np.full((height, gap, 3), 255, np.uint8)
        padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
        return np.concatenate([x for p in padded for x in (p, spacer)][:-1], axis=1)


def explain_studies(run, studies: list[dict[str, np.ndarray]], names: list[str], method: str = "gradcam",
                    class_name: str = "metastasis", batch_size: int = 8, **options) -> list[Explanation]:
    """Explain studies given as raw views {view: (H, W) counts, as acquired}; sizes may differ per study."""
    if class_name not in run.classes:
        raise ModelError(f"class {class_name!r} is not an output of this model ({', '.join(run.classes)})")
    class_index = run.classes.index(class_name)
    preprocessor = run.preprocessor
    out = []
    for start in range(0, len(names), batch_size):
        chunk = studies[start:start + batch_size]
        prepared = [preprocessor.numpy(study) for study in chunk]
        inputs = {name: np.stack([p[name] for p in prepared]) for name in preprocessor.input_names}
        probabilities = np.asarray(run.model.predict(inputs, verbose=0))
        maps = class_activation_maps(run.model, inputs, class_index, method, registry_name=run.config.model,
                                     **options)
        for i, (name, study) in enumerate(zip(names[start:start + batch_size], chunk)):
            shown = {view: study[view] for view in preprocessor.source_views}
            per_view = {view: preprocessor.invert_map(view, maps[input_name][i], shown[view].shape)
                        for input_name, view in zip(preprocessor.input_names, preprocessor.source_views)}
            out.append(Explanation(name, shown, per_view, float(probabilities[i, class_index]), class_name))
    return out


def save_png(explanation: Explanation, path, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfbonemet.tasks.report import save_figure

    fig, axes = plt.subplots(1, len(explanation.views), figsize=(2.6 * len(explanation.views), 8), squeeze=False)
    for ax, view in zip(axes[0], explanation.views):
        ax.imshow(overlay_rgb(explanation.views[view], explanation.maps[view]), interpolation="nearest")
        if view == "anterior":
            for y0, x0, y1, x1 in explanation.boxes:
                ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="lime", lw=0.8))
        ax.set_title(VIEW_LABELS[view], fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{method}: P({explanation.class_name}) = {explanation.probability:.3f}", fontsize=10)
    save_figure(fig, path)


def save_dicom(explanation: Explanation, path, method: str, source_file=None) -> None:
    """The side-by-side overlay as an RGB Secondary Capture that a PACS viewer files with its study.

    Only the source's StudyInstanceUID is copied (so the capture joins that study); patient name
    and ID are left empty and every other identifier is new.
    """
    import io

    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from tfbonemet.io.atomic import write_bytes

    study_uid = None
    if source_file is not None:
        study_uid = pydicom.dcmread(source_file, stop_before_pixels=True).get("StudyInstanceUID")
    rgb = np.ascontiguousarray(explanation.composite())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = str(study_uid or generate_uid())
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "", "", ""
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "", "", "", ""
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.SeriesNumber, ds.InstanceNumber = 9001, 1
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesDescription = f"tfbonemet {method} P({explanation.class_name})={explanation.probability:.2f}"[:64]
    ds.ImageComments = "Model explanation heat map; not for diagnosis on its own."
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    write_bytes(path, buffer.getvalue())


def body_mask(counts: np.ndarray) -> np.ndarray:
    """Pixels inside the body outline: smoothed counts above 2% of their 99th percentile, holes filled."""
    smooth = ndimage.gaussian_filter(np.asarray(counts, np.float64), 2)
    return ndimage.binary_fill_holes(smooth > 0.02 * np.percentile(smooth, 99))


def lesion_region(shape, boxes, tolerance: int) -> np.ndarray:
    region = np.zeros(shape, bool)
    for y0, x0, y1, x1 in boxes:
        region[max(y0 - tolerance, 0):y1 + tolerance + 1, max(x0 - tolerance, 0):x1 + tolerance + 1] = True
    return region


def pointing_game(run, split: str = "test", method: str = "gradcam", tolerance: int | None = None,
                  limit: int | None = None, views: str = "anterior", log=print, **options) -> dict:
    """Fraction of metastatic phantom studies whose map peak lies in a lesion box dilated by `tolerance` px.

    Maps are scored in the source view's frame (the preprocessor's inverse), where the boxes are.
    `views="anterior"` scores the anterior map alone; `"both"` adds the posterior map mirrored
    into the anterior frame (deep lesions show best posteriorly), using unnormalised maps so
    each view keeps its own weight. Chance is what a peak drawn uniformly over the body would
    score: the dilated boxes' share of the body area, averaged over studies. The one-sided
    binomial p-value tests score > chance.
    """
    from scipy.stats import binomtest

    from tfbonemet.data.datasets import open_split
    from tfbonemet.errors import ConfigError, DataError
    from tfbonemet.vocab import CLASS_NAMES

    if views not in ("anterior", "both"):
        raise ConfigError(f"pointing-game views must be 'anterior' or 'both', got {views!r}")
    data = open_split(run.config, split)
    if data.lesion_boxes is None or data.class_names != CLASS_NAMES:
        raise DataError(f"data {run.config.data!r} records no lesion boxes; the pointing game needs the phantom")
    wanted = [i for i, (label, boxes) in enumerate(zip(data.labels, data.lesion_boxes))
              if label == CLASS_NAMES.index("metastasis") and boxes["anterior"]][:limit]
    if not wanted:
        raise DataError(f"split {split!r} of data {run.config.data!r} has no metastatic studies with lesion boxes")
    chosen = {i: study for i, study in data.raw_studies(("anterior", "posterior")) if i in set(wanted)}
    studies = [chosen[i] for i in wanted]
    tolerance = tolerance if tolerance is not None else max(2, round(0.015 * studies[0]["anterior"].shape[1]))
    explanations = explain_studies(run, studies, [f"{split}-{i:03d}" for i in wanted], method,
                                   normalise=views == "anterior", **options)
    hits, chances = [], []
    for i, study, explanation in zip(wanted, studies, explanations):
        cam = explanation.maps.get("anterior", next(iter(explanation.maps.values())))
        if views == "both" and "posterior" in explanation.maps:
            cam = cam + explanation.maps["posterior"][:, ::-1]
        region = lesion_region(cam.shape, data.lesion_boxes[i]["anterior"], tolerance)
        body = body_mask(study["anterior"]) | region
        peak = np.unravel_index(np.argmax(cam), cam.shape)
        hits.append(bool(region[peak]))
        chances.append(float(region.sum() / body.sum()))
    n, k, chance = len(hits), int(sum(hits)), float(np.mean(chances))
    return {"split": split, "method": method, "views": views, "studies": n, "hits": k, "score": k / n,
            "chance": chance, "tolerance_px": int(tolerance),
            "p_value": float(binomtest(k, n, chance, alternative="greater").pvalue)}


def _dicom_inputs(paths, run):
    """(raw studies, names, source files) for DICOM studies with the views this model takes."""
    from tfbonemet.data.dicom import read_studies
    from tfbonemet.errors import DataError

    two_view = len(run.preprocessor.source_views) == 2
    studies = read_studies(list(paths))
    wanted = [s for s in studies if (s.is_two_view if two_view else (s.image is not None or s.anterior is not None))]
    if not wanted:
        raise DataError(f"{', '.join(map(str, paths))}: no study has the views this model takes "
                        f"({'anterior + posterior' if two_view else 'one image'})")
    if two_view:
        views = [{"anterior": s.anterior, "posterior": s.posterior} for s in wanted]
    else:
        views = [{"anterior": s.anterior if s.anterior is not None else s.image} for s in wanted]
    return views, [f"study-{s.study_key[:12]}" for s in wanted], [s.source_files[0] for s in wanted]


def run_explain(path, split: str = "test", num: int = 4, dicom_paths=(), methods=("gradcam",),
                output_dir=None, dicom_output: bool = False, class_name: str = "metastasis",
                only_class: bool = False, data_options: dict | None = None, log=print, **options):
    """Explain a run's split (its first `num` studies, or of those labelled `class_name` if `only_class`)
    or DICOM studies; returns the written file paths."""
    from pathlib import Path

    from tfbonemet.data.datasets import open_split
    from tfbonemet.io.atomic import make_dir
    from tfbonemet.run import Run

    run = Run.load(path, data_options)
    if class_name not in run.classes:
        raise ModelError(f"class {class_name!r} is not an output of this model ({', '.join(run.classes)})")
    if dicom_paths:
        studies, names, sources = _dicom_inputs(dicom_paths, run)
        boxes = [[] for _ in names]
    else:
        data = open_split(run.config, split)
        labels = data.task_labels(run.config.task)
        wanted = run.classes.index(class_name)
        chosen = [i for i in range(len(data)) if not only_class or labels[i] == wanted][:num]
        raw = {i: study for i, study in data.raw_studies(run.preprocessor.source_views) if i in set(chosen)}
        studies, names, sources = [raw[i] for i in chosen], [f"{split}-{i:03d}" for i in chosen], [None] * len(chosen)
        boxes = [data.lesion_boxes[i]["anterior"] if data.lesion_boxes else [] for i in chosen]
    path = Path(path)
    out = make_dir(Path(output_dir) if output_dir else (path if path.is_dir() else path.parent) / (
        "explain-dicom" if dicom_paths else f"explain-{split}"))
    written = []
    for method in methods:
        for explanation, source, known in zip(explain_studies(run, studies, names, method, class_name, **options),
                                              sources, boxes):
            explanation.boxes = known
            stem = out / f"{explanation.name}-{method.replace('+', 'p')}"
            save_png(explanation, stem.with_suffix(".png"), method)
            written.append(stem.with_suffix(".png"))
            if dicom_output:
                save_dicom(explanation, stem.with_suffix(".dcm"), method, source)
                written.append(stem.with_suffix(".dcm"))
            log(f"{stem.name}: P({class_name}) = {explanation.probability:.3f}")
    log(f"Wrote {len(written)} files to {out}")
    return written

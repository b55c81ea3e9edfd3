"""`tfbonemet explain` on a run: studies of a split or DICOM files -> PNG figures (and DICOM captures)."""
from __future__ import annotations

from pathlib import Path

from tfbonemet.errors import ConfigError, ModelError
from tfbonemet.progress import counter
from tfbonemet.tasks.explain.cams import explain_studies
from tfbonemet.tasks.explain.figures import save_png
from tfbonemet.vocab import ANTERIOR, POSITIVE_CLASS


def split_inputs(run, split: str, num: int, class_name: str, only_class: bool):
    """(raw studies, names, true labels, known lesion boxes) of the first `num` studies of a split."""
    from tfbonemet.data.datasets import open_split

    data = open_split(run.config, split)
    labels = data.task_labels(run.config.task)
    wanted = run.classes.index(class_name)
    chosen = [i for i in range(len(data)) if not only_class or labels[i] == wanted][:num]
    raw = {i: study for i, study in data.raw_studies(run.preprocessor.source_views) if i in set(chosen)}
    boxes = [data.lesion_boxes[i][ANTERIOR] if data.lesion_boxes else [] for i in chosen]
    return ([raw[i] for i in chosen], [f"{split}-{i:03d}" for i in chosen],
            [run.classes[labels[i]] for i in chosen], boxes)


def run_explain(path, split: str = "test", num: int = 4, dicom_paths=(), methods=("gradcam",),
                output_dir=None, dicom_output: bool = False, class_name: str = POSITIVE_CLASS,
                only_class: bool = False, data_options: dict | None = None, deidentify: bool = False,
                log=print, **options) -> list[Path]:
    """Explain a run's split (its first `num` studies, or of those labelled `class_name` if `only_class`)
    or DICOM studies; returns the written file paths."""
    from tfbonemet.io.atomic import make_dir
    from tfbonemet.run import Run
    from tfbonemet.tasks.explain import dicom

    if dicom_output and not dicom_paths:
        raise ConfigError("--dicom-output needs DICOM studies (--dicom PATH): the captures join their source study")
    run = Run.load(path, data_options)
    if class_name not in run.classes:
        raise ModelError(f"class {class_name!r} is not an output of this model ({', '.join(run.classes)})")
    if dicom_paths:
        studies, names, sources = dicom.dicom_inputs(dicom_paths, run)
        truths, boxes = [None] * len(names), [[] for _ in names]
    else:
        studies, names, truths, boxes = split_inputs(run, split, num, class_name, only_class)
        sources = [None] * len(names)
    path = Path(path)
    out = make_dir(Path(output_dir) if output_dir else (path if path.is_dir() else path.parent) / (
        "explain-dicom" if dicom_paths else f"explain-{split}"))
    written = [dicom.write_index(out, names, sources)] if dicom_paths else []
    for method in methods:
        with counter(f"Explaining {len(studies)} studies with {method}", len(studies), log, unit="study") as advance:
            explanations = explain_studies(run, studies, names, method, class_name, advance=advance, **options)
        for explanation, source, truth, known in zip(explanations, sources, truths, boxes):
            explanation.true_label, explanation.boxes = truth, known
            stem = out / f"{explanation.name}-{method.replace('+', 'p')}"
            written.append(save_png(explanation, stem.with_suffix(".png"), method))
            if dicom_output:
                written += dicom.write_captures(explanation, source, stem, method, deidentify)
            log(f"{stem.name}: P({class_name}) = {explanation.probability:.3f}, predicted {explanation.predicted}")
    log(f"Wrote {len(written)} files to {out}" + (f" ({dicom.INDEX_FILE} maps study keys to your source files: "
                                                  "keep it local)" if dicom_paths else ""))
    return written

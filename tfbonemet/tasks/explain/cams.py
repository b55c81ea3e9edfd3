"""Class-activation maps (tf-keras-vis) per view, mapped back to each view's acquired frame.

Each view gets its own map from its own feature layer (`anterior_features` / `posterior_features`
in two-view nets), so a lesion seen only on the posterior view is not smeared across both. Maps
are computed in the model's input frame (cropped, posterior mirrored, resized, padded) and mapped
back to each view's acquired orientation and pixel grid by the run's ScanPreprocessor inverse.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy as np

from tfbonemet.errors import ModelError
from tfbonemet.run import serving_model
from tfbonemet.vocab import POSITIVE_CLASS, model_input_names

METHODS = ("gradcam", "gradcam++", "scorecam")


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
    model = serving_model(model)  # a mixed-precision model's maps: its float32 rebuild's
    names = model_input_names(model)
    seeds = [np.asarray(inputs[n], np.float32) for n in names]
    visualizer = _visualizer(method)(model, model_modifier=ReplaceToLinear(), clone=True)
    # Score-CAM predicts on masked copies with Keras' default progress bar: raw ANSI in any log
    visualizer.model.predict = functools.partial(visualizer.model.predict, verbose=0)
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


@dataclasses.dataclass
class Explanation:
    """One study's views (raw counts, as acquired) and per-view maps in the same frames, with its call.

    Maps are each scaled to their own maximum (1); `figures` ties the displayed heat to the
    probability, so studies can be compared.
    """

    name: str
    views: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]
    probability: float  # of `class_name`
    class_name: str
    predicted: str | None = None  # the run's label (stored threshold for binary runs)
    threshold: float | None = None
    true_label: str | None = None
    boxes: list = dataclasses.field(default_factory=list)  # known lesions (phantom), anterior (y0, x0, y1, x1)

    @property
    def heat(self) -> dict[str, np.ndarray]:
        """What figures show: each map times the probability, so P = 0.48 never looks as hot as P = 0.97."""
        return {view: np.clip(m, 0, 1) * self.probability for view, m in self.maps.items()}


def explain_studies(run, studies: list[dict[str, np.ndarray]], names: list[str], method: str = "gradcam",
                    class_name: str = POSITIVE_CLASS, batch_size: int = 8, advance=None,
                    **options) -> list[Explanation]:
    """Explain studies given as raw views {view: (H, W) counts, as acquired}; sizes may differ per study.

    `advance(n)`, if given, is called after each batch of n studies (a progress counter).
    """
    if class_name not in run.classes:
        raise ModelError(f"class {class_name!r} is not an output of this model ({', '.join(run.classes)})")
    class_index = run.classes.index(class_name)
    preprocessor = run.preprocessor
    out = []
    for start in range(0, len(names), batch_size):
        chunk = studies[start:start + batch_size]
        inputs = preprocessor.batch(chunk)
        probabilities = np.asarray(run.model.predict(inputs, verbose=0))
        called = run.labels_of(probabilities)
        maps = class_activation_maps(run.model, inputs, class_index, method, registry_name=run.config.model,
                                     **options)
        for i, (name, study) in enumerate(zip(names[start:start + batch_size], chunk)):
            shown = {view: study[view] for view in preprocessor.source_views}
            per_view = preprocessor.invert_maps({input_name: m[i] for input_name, m in maps.items()}, shown)
            out.append(Explanation(name, shown, per_view, float(probabilities[i, class_index]), class_name,
                                   run.label_names[int(called[i])], run.threshold))
        if advance is not None:
            advance(len(chunk))
    return out



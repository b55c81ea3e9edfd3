"""`tfbonemet explain`: class-activation maps per view (cams), figures (figures), the pointing game
(pointing), DICOM in and out (dicom) and the command's task (task)."""
from tfbonemet.tasks.explain.cams import METHODS, Explanation, class_activation_maps, explain_studies, target_layers
from tfbonemet.tasks.explain.figures import display_counts, overlay_rgb, save_png
from tfbonemet.tasks.explain.pointing import pointing_game
from tfbonemet.tasks.explain.task import run_explain

__all__ = ["METHODS", "Explanation", "class_activation_maps", "display_counts", "explain_studies", "overlay_rgb",
           "pointing_game", "run_explain", "save_png", "target_layers"]

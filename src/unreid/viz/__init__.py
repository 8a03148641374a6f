"""Pictures of a run: training curves, ranked lists, cluster montages, t-SNE,
and the self-contained HTML report that gathers them."""

from unreid.viz.montage import cluster_montage, overlay_mask, ranked_list_image
from unreid.viz.plots import plot_embedding, plot_training_curves, tsne_2d
from unreid.viz.report import load_records, save_report_data, select_report_samples, write_report

__all__ = [
    "cluster_montage",
    "load_records",
    "overlay_mask",
    "plot_embedding",
    "plot_training_curves",
    "ranked_list_image",
    "save_report_data",
    "select_report_samples",
    "tsne_2d",
    "write_report",
]

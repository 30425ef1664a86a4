"""`cttt report`: a sweep's cells as a page that opens with its answer (report.md, report.html), the plots
that carry it, and `results.jsonl`, the per-cell data that rebuilds the page alone.

    loading   results store or results.jsonl -> Cells; writing results.jsonl
    study     Cells -> Report (the analysis of metrics/aggregate.py, names, budget curves, number formats)
    answer    the headline and the findings, in words (no plotting)
    tables    Markdown tables;  terminal: what `cttt status` / `cttt report` print
    plots     the pictures;  page: report.md and report.html;  appendix: provenance, design, rule
    wandb_run the report as a W&B run

`page` is imported where a page is written, not here: the answer, the tables and `cttt status` never load
matplotlib.
"""

from catalyst_ttt.report.loading import RESULTS_FILE, Cells, from_store, read_file
from catalyst_ttt.report.study import Report, build

__all__ = ["RESULTS_FILE", "Cells", "Report", "build", "from_store", "read_file"]

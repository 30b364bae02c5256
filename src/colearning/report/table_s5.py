"""The report page of a Table S5 directory (``colearn expand-table``): the table, as HTML.

Reads what ``colearning.expand.table`` wrote (its spec and cells); never trains.
"""

from __future__ import annotations

from pathlib import Path

from colearning.expand.table import display_rows, load_table_s5_dir, table_s5
from colearning.report.html import Section, Table, render_page, write_page


def build_table_s5_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write ``out``/report.html (default: ``path``/report.html, next to table_s5.txt)."""
    path = Path(path)
    spec = load_table_s5_dir(path)
    header, body = display_rows(table_s5(path))
    base = spec.base
    about = (f"{base['model']['name']} on {base['data']['name']} "
             f"(train {base['data']['train_size']}, test {base['data']['test_size']}), "
             f"N={spec.n_members} grown by M={spec.add}, β={spec.beta:g} "
             f"(β̄ = βN = {spec.beta * spec.n_members:g} for N={spec.n_members}), "
             f"E={spec.epochs} epochs, seeds {spec.seeds}. Accuracy: uniform mean of the "
             "members' probabilities on the test split; mean ± std (ddof=1) over seeds; Δ is "
             "the paired difference to the base ensemble of the same seed. The paper column is "
             "LeNet-5 on the full CIFAR-10 (150/300 epochs).")
    page = render_page(f"Table S5: {spec.name}", [
        Section("Expanding a trained ensemble (paper Table S5)", text=about,
                tables=[Table("Ensemble accuracy by way of growing", header, body)]),
    ])
    target = (Path(out) if out is not None else path) / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_page(target, page)
    return target

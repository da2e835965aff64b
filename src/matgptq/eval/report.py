"""Tables and a PNG plot of perplexity against bits per weight."""

from __future__ import annotations

from pathlib import Path


def format_table(runs: list[dict]) -> str:
    """One row per (run, precision): model, bits, bits/weight, perplexity."""
    lines = [f"{'model':<32} {'bits':>4} {'bits/w':>7} {'perplexity':>11}"]
    for run in runs:
        for r in run["results"]:
            b = "fp" if r["bits"] is None else str(r["bits"])
            bpw = r.get("bits_per_weight")
            lines.append(f"{run['model'][:32]:<32} {b:>4} {bpw if bpw is not None else '':>7} {r['perplexity']:>11.3f}")
    first = runs[0] if runs else {}
    lines.append(
        f"(data {first.get('data_text')}, seq_len {first.get('seq_len')}, windows "
        f"{first.get('results', [{}])[0].get('windows')}, {first.get('results', [{}])[0].get('tokens_scored')} tokens scored)"
    )
    return "\n".join(lines)


def plot_results(runs: list[dict], path: str | Path, title: str | None = None,
                 reference: float | None = None) -> Path:
    """Perplexity (log scale) against bits per weight, one line per run (checkpoint or method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        pts = sorted((r.get("bits_per_weight") or r["bits"] or 16, r["perplexity"]) for r in run["results"])
        if len(pts) == 1 and run["results"][0]["bits"] is None:
            ax.axhline(pts[0][1], ls="--", color="gray", label=f"{run['model']} (full precision)")
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=run.get("label") or run["model"])
    if reference is not None:
        ax.axhline(reference, ls="--", color="gray", label="full precision")
    ax.set_xlabel("bits per weight (codes + scales)")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

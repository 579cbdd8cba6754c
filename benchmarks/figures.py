"""What the benchmark figures share: one look for every panel, and where the file went."""
from matplotlib.figure import Figure


def save(fig: Figure, out: str) -> None:
    """Grid and legend on every panel, then the PNG (110 dpi, as the README's figures)."""
    for ax in fig.axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(out, dpi=110)
    print(f"written: {out}")

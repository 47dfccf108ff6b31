"""An export run's summary as a terminal shows it, printed by ``live-cosmos`` and the demo."""

from __future__ import annotations

from iotswarm_pipelines.export.pipeline import ExportSummary


def format_size(size: float) -> str:
    """Bytes for a person: ``1.4 MiB`` rather than ``1468006``."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_summary(
    summary: ExportSummary, destination: str | None = None, max_sites: int | None = None
) -> str:
    """A few lines for a terminal: the stage counts, then the watermarks this run moved."""
    head = (
        f"{summary.table.name}: {summary.rows_read} rows, {summary.payloads_built} payloads, "
        f"{summary.objects_stored} objects ({format_size(summary.bytes_stored)})"
    )
    if summary.failed:
        head += f", {summary.failed} FAILED"
    if summary.dry_run:
        head += " (dry run: nothing stored)"
    if destination:
        head += f" -> {destination}"
    lines = [head]
    moved = {site: summary.watermarks[site] for site in summary.advanced}
    if moved:
        lag = "" if summary.lag_seconds is None else f" (lag {summary.lag_seconds:.0f} s)"
        lines.append(f"  watermarks moved at {len(moved)} of {len(summary.watermarks)} sites{lag}:")
        shown = list(moved.items())[:max_sites]
        lines += [f"    {site}  {when:%Y-%m-%d %H:%M:%S}" for site, when in shown]
        if len(shown) < len(moved):
            lines.append(f"    ... and {len(moved) - len(shown)} more sites")
    elif summary.watermarks and not summary.dry_run:
        lines.append(f"  no watermark moved: nothing new at {len(summary.watermarks)} sites")
    return "\n".join(lines)

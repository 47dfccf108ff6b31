"""An export run's summary as a terminal shows it, printed by ``live-cosmos`` and the demo."""

from __future__ import annotations

from iotswarm_pipelines.export.pipeline import ExportSummary


def format_summary(
    summary: ExportSummary, destination: str | None = None, max_sites: int | None = None
) -> str:
    """A few lines for a terminal: the stage counts, then each site's new watermark."""
    head = (
        f"{summary.table}: {summary.rows_read} rows, {summary.payloads_built} payloads, "
        f"{summary.objects_stored} objects ({summary.bytes_stored} bytes)"
    )
    if summary.failed:
        head += f", {summary.failed} FAILED"
    if summary.dry_run:
        head += " (dry run: nothing stored)"
    if destination:
        head += f" -> {destination}"
    lines = [head]
    if summary.watermarks:
        lag = "" if summary.lag_seconds is None else f" (lag {summary.lag_seconds:.0f} s)"
        lines.append(f"  watermarks of {len(summary.watermarks)} sites{lag}:")
        shown = list(summary.watermarks.items())[:max_sites]
        lines += [f"    {site}  {when:%Y-%m-%d %H:%M:%S}" for site, when in shown]
        if len(shown) < len(summary.watermarks):
            lines.append(f"    ... and {len(summary.watermarks) - len(shown)} more sites")
    return "\n".join(lines)

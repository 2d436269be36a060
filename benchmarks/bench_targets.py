"""Check three claims about LASPA x0 on a `laspa bench --sweep --json` result.

    laspa bench --suite shapes-brief --cases 24 --steps 25 --sweep --json out.json --plots plots/
    python benchmarks/bench_targets.py out.json

or run the standard command first (same options as above, model optional):

    python benchmarks/bench_targets.py --run out.json [--suite S] [--model FOLDER] [--cases 24]

Checks read off the JSON (results: docs/results.md, "LASPA alignments"):
1. LASPA x0 at its defaults against diffusers' img2img (peer-sdedit) at its default
   strength: higher bg_psnr without lower edit_success.
2. Over the sweeps, LASPA x0's points dominate SDEdit's strength curve: every SDEdit
   point has a LASPA x0 point at least as good on both axes.
3. The paper's ordering of the alignments: input alignment keeps most (highest bg_psnr,
   lowest edit_success at the same K and beta), x0 alignment has the best trade-off
   (largest area under its preservation/edit frontier), error alignment is the hardest
   to tune (narrowest beta window where it both edits and preserves).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ALIGNMENTS = ("laspa-input", "laspa-eps", "laspa-x0")


def points(sweeps: dict, method: str, axes=("K", "beta", "strength")) -> list[tuple]:
    """(edit_success, bg_psnr, axis, value) of every sweep point of a method."""
    found = []
    for axis in axes:
        for p in sweeps.get(method, {}).get(axis, []):
            if p.get("edit_success") is not None and p.get("bg_psnr") is not None:
                found.append((p["edit_success"], p["bg_psnr"], axis, p["value"]))
    return found


def dominated(point: tuple, by: list[tuple]) -> bool:
    """Whether some point of ``by`` is at least as good on both axes."""
    return any(q[0] >= point[0] and q[1] >= point[1] for q in by)


def frontier_area(pts: list[tuple], floor: float) -> float:
    """Area under the Pareto staircase of (success, bg_psnr - floor) over success in [0, 1]:
    larger means more preservation at every edit rate."""
    area = 0.0
    for step in range(100):
        x = (step + 0.5) / 100
        best = max((p[1] for p in pts if p[0] >= x), default=floor)
        area += max(best - floor, 0.0) / 100
    return area


def best_trade_off(areas: dict[str, float], tolerance: float = 0.01) -> str:
    """The verdict on "x0 alignment has the best trade-off": CONFIRMED only if x0's area is
    the largest by more than ``tolerance``; a tie (consistent x0 alignment *is* exact error
    alignment, so their areas agree) is not a confirmation."""
    top = max(areas.values())
    best = [a for a, v in areas.items() if v >= top - tolerance]
    if best == ["laspa-x0"]:
        verdict = "CONFIRMED"
    elif "laspa-x0" in best:
        verdict = "TIED"
    else:
        verdict = "REFUTED"
    return f"[{verdict}] x0 alignment has the best trade-off (largest area: {', '.join(best)})"


def check(data: dict) -> list[str]:
    lines = [
        f"{data['suite']}: {data['cases']} cases, {data['steps']} steps, model {data['model']}"
    ]
    methods, sweeps = data["methods"], data.get("sweeps", {})
    x0, peer = methods.get("laspa-x0"), methods.get("peer-sdedit")
    if x0 and peer and x0["edit_success"] is not None:
        ok = x0["bg_psnr"] > peer["bg_psnr"] and x0["edit_success"] >= peer["edit_success"]
        lines.append(
            f"[{'PASS' if ok else 'FAIL'}] defaults: laspa-x0 bg_psnr {x0['bg_psnr']:.2f} "
            f"success {x0['edit_success']:.2f} vs peer-sdedit bg_psnr {peer['bg_psnr']:.2f} "
            f"success {peer['edit_success']:.2f}"
        )
    else:
        lines.append("[SKIP] defaults: needs laspa-x0 and peer-sdedit in the result")
    ours, theirs = points(sweeps, "laspa-x0", ("K", "beta")), points(sweeps, "sdedit")
    if ours and theirs:
        beaten = [p for p in theirs if dominated(p, ours)]
        lines.append(
            f"[{'PASS' if len(beaten) == len(theirs) else 'FAIL'}] frontier: "
            f"{len(beaten)}/{len(theirs)} SDEdit strength points dominated by a laspa-x0 point"
        )
    else:
        lines.append("[SKIP] frontier: needs --sweep with laspa-x0 and sdedit")
    swept = [p for a in ALIGNMENTS for p in points(sweeps, a, ("K", "beta"))]
    if swept and not any(p[0] > 0 for p in swept):
        lines.append(
            "[INCONCLUSIVE] alignment ordering: no alignment ever edits (edit_success 0 at "
            "every K and beta); the model is too weak to rank them"
        )
    elif all(points(sweeps, a, ("K", "beta")) for a in ALIGNMENTS):
        floor = methods.get("generate", {}).get("bg_psnr") or 0.0
        areas = {a: frontier_area(points(sweeps, a, ("K", "beta")), floor) for a in ALIGNMENTS}
        lines.append(
            "frontier area above generate's bg_psnr (dB x success): "
            + ", ".join(f"{a} {v:.2f}" for a, v in areas.items())
        )
        at_default = {}
        for a in ALIGNMENTS:
            k_points = {p[3]: p for p in points(sweeps, a, ("K",))}
            if 200 in k_points:
                at_default[a] = k_points[200]
        if len(at_default) == len(ALIGNMENTS):
            keeps = max(at_default, key=lambda a: at_default[a][1])
            edits_least = min(at_default, key=lambda a: at_default[a][0])
            lines.append(
                "at K=200 and the default beta: "
                + ", ".join(
                    f"{a} bg_psnr {p[1]:.2f} success {p[0]:.2f}" for a, p in at_default.items()
                )
            )
            verdict = keeps == "laspa-input" and edits_least == "laspa-input"
            lines.append(
                f"[{'CONFIRMED' if verdict else 'REFUTED'}] input alignment keeps most / "
                f"edits least (most kept: {keeps}, least edited: {edits_least})"
            )
        lines.append(best_trade_off(areas))
        sdedit_bg = peer["bg_psnr"] if peer else floor
        windows = {}
        for a in ALIGNMENTS:
            betas = points(sweeps, a, ("beta",))
            top = max((p[0] for p in betas), default=0.0)
            windows[a] = [p[3] for p in betas if p[0] >= 0.5 * top > 0 and p[1] > sdedit_bg]
        lines.append(
            "beta values that edit (success >= half its best) and keep (bg_psnr above "
            "peer-sdedit's): " + ", ".join(f"{a} {w}" for a, w in windows.items())
        )
        hardest = min(windows, key=lambda a: len(windows[a]))
        lines.append(
            f"[{'CONFIRMED' if hardest == 'laspa-eps' else 'REFUTED'}] error alignment is the "
            f"hardest to tune (narrowest window: {hardest})"
        )
    else:
        lines.append("[SKIP] alignment ordering: needs --sweep over all three alignments")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="result of laspa bench --sweep --json")
    parser.add_argument("--run", action="store_true", help="run the standard command first")
    parser.add_argument("--model", help="model folder (default: the bundled miniature)")
    parser.add_argument("--suite", default="shapes-brief", help="suite for --run")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--plots", type=Path, help="plots folder for --run")
    args = parser.parse_args(argv)
    if args.run:
        from laspa.cli import main as laspa

        command = ["bench", "--suite", args.suite, "--cases", str(args.cases)]
        command += ["--steps", str(args.steps), "--sweep"]
        command += ["--json", str(args.json)]
        command += ["--model", args.model] if args.model else []
        command += ["--plots", str(args.plots)] if args.plots else []
        try:
            laspa(command)
        except SystemExit as stop:
            if stop.code:
                return int(stop.code)
    print("\n".join(check(json.loads(args.json.read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

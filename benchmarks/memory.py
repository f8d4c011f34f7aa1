"""Memory: peak RSS of a process forwarding one big message, against an idle process.

    .venv/bin/python -m benchmarks.memory [--mib 39] [--smoke]

Each figure is the peak RSS of a fresh child process (``VmHWM``; ``ru_maxrss`` would inherit
this parent's peak across fork+exec, see ``_child.maxrss_kib``) (the message never passes through this
one): moto's server (its own process) holds the 39 MiB object in S3, and FakeGoogle (in this
process, ``store_bodies=False``) receives the upload and keeps only its size and hash.

- idle: the child imports the handler module and creates the same AWS clients, and stops;
- small: the child forwards a 1 KiB message (the size-independent cost of one delivery);
- big: the child forwards the big message.

The target compares ours-big with ours-idle (<= idle + 16 MiB). The reference does the same
with its own idle process; it reads the whole object and sends it base64url-encoded in JSON.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import common

TARGET_MIB = 16.0


def measure(message_mib: float, *, with_reference: bool = True, repeats: int = 1) -> dict[str, Any]:
    common.isolate_aws_environ()
    size = int(message_mib * 1024 * 1024)
    with (
        common.MotoServer() as moto,
        common.BenchGoogle(store_bodies=False) as google,
        common.task_roots() as roots,
        tempfile.TemporaryDirectory() as tmp,
    ):
        world = common.AwsWorld(moto.url).create()
        world.install_token(google)
        impls = common.implementations(roots, with_reference=with_reference)
        kinds = [k for k in ("ours", "reference") if k in impls]
        big = common.raw_message("big-template", size)
        rows: dict[str, dict[str, list[float]]] = {k: {"idle": [], "small": [], "big": []} for k in kinds}
        for attempt in range(repeats):
            for kind in kinds:
                impl = impls[kind]
                env = common.child_environ(world, google, moto.url, impl.task_root)
                rows[kind]["idle"].append(common.mib(common.run_child(impl, "idle", env)["maxrss_kib"]))
                for label, raw in (("small", common.raw_message(f"mem-{kind}-small-{attempt}")), ("big", big)):
                    message_id = f"mem-{kind}-{label}-{attempt}"
                    world.store(message_id, raw)
                    event = common.write_event(Path(tmp), message_id, [message_id])
                    result = common.run_child(impl, "forward", env, str(event))
                    if result["failures"]:
                        raise RuntimeError(f"{kind} could not forward {message_id}: {result}")
                    rows[kind][label].append(common.mib(result["maxrss_kib"]))
        imported = {m.size for m in google.messages}
        if size not in imported:
            raise RuntimeError("the big message never reached the fake Gmail intact")
    stats = {kind: {label: min(values) for label, values in by_label.items()} for kind, by_label in rows.items()}
    return {"message_mib": message_mib, "message_bytes": size, "stats": stats, "samples": rows}


def report(result: dict[str, Any]) -> str:
    rows = []
    for kind, s in result["stats"].items():
        rows.append([kind, s["idle"], s["small"], s["big"], s["big"] - s["idle"], s["big"] - s["small"]])
    headers = ["process", "idle MiB", "1 KiB msg MiB", "big msg MiB", "big - idle", "big - 1 KiB"]
    ours = result["stats"]["ours"]
    delta = ours["big"] - ours["idle"]
    return "\n".join(
        [
            f"Memory: peak RSS (VmHWM) of a fresh process forwarding one {result['message_mib']:g} MiB message",
            common.table(headers, rows),
            f"target: ours <= idle + {TARGET_MIB:g} MiB -> {'MET' if delta <= TARGET_MIB else 'NOT MET'} "
            f"(+{delta:.1f} MiB)",
        ]
    )


def summary(result: dict[str, Any]) -> common.Summary:
    ours = result["stats"]["ours"]
    ref = result["stats"].get("reference")
    delta = ours["big"] - ours["idle"]
    return common.Summary(
        f"memory, {result['message_mib']:g} MiB message",
        f"{ours['big']:.1f} MiB = idle + {delta:.1f}",
        f"{ref['big']:.1f} MiB = idle + {ref['big'] - ref['idle']:.1f}" if ref else "(not installed)",
        f"<= idle + {TARGET_MIB:g} MiB",
        delta <= TARGET_MIB,
        f"ours idle {ours['idle']:.1f} MiB, 1 KiB message {ours['small']:.1f} MiB",
    )


def run(smoke: bool = False, message_mib: float | None = None) -> common.Summary:
    result = measure(message_mib or (4.0 if smoke else 39.0), with_reference=True, repeats=1 if smoke else 3)
    print(report(result), flush=True)
    if not smoke:
        common.save_result("memory", result)
    return summary(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=None, help="message size in MiB (default 39; smoke 4)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    args = parser.parse_args()
    run(args.smoke, args.mib)


if __name__ == "__main__":
    main()

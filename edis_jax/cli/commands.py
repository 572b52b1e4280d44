"""`edis-jax train | resume | report | diagnose | tasks`."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from edis_jax.cli.parsing import fail, format_table, parse
from edis_jax.config import Algo, presets
from edis_jax.config.generator_configs import GUIDANCE_ROWS
from edis_jax.config.validation import ConfigError
from edis_jax.storage.output_paths import check_output_file, write_whole


def train_command(args: list[str]) -> int:
    """Offline pretraining then online fine-tuning for N vmapped seeds (EDIS or baseline)."""
    from edis_jax import config
    from edis_jax.train import loop

    task = _flag_value(args, "--task")
    name = _flag_value(args, "--preset") or ("paper" if task else "cpu")
    cfg = parse(
        config.RunConfig,
        _split_guide(args),
        "edis-jax train",
        default=presets.preset(name, task),
        description="Offline then online training of N seeds in one compiled program. "
        "--preset picks the defaults (tiny, cpu, paper) that the other flags override; "
        "--task applies a published per-task config on top (preset paper unless given; "
        "`edis-jax tasks` lists them); "
        "--guide takes a comma list of state,policy,transition (or none).",
    )
    ignored = ineffective_flags(args, cfg)
    if ignored:
        print(f"edis-jax: warning: {ignored}", file=sys.stderr)
    summary = loop.train(cfg)
    _print_summary(summary, cfg.out)
    return 0


# Flags that act only through the generator (EDIS), and the online phase's own flags.
_GENERATOR_FLAGS = ("--guide", "--energy.", "--diffusion.", "--online.num-samples",
                    "--online.synthetic-ratio", "--online.relabel", "--online.utd-retrain")  # fmt: skip


def ineffective_flags(args: list[str], cfg) -> str | None:
    from edis_jax.config.tasks import TASKS

    """One line naming the flags given that change nothing in this run, or None: a generator's
    flags in a baseline (--no-edis) or a run without an online phase, the online phase's flags
    with --online-steps 0, --init-at without --init-from."""
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    parts = []
    if cfg.online_steps == 0:
        online = sorted(
            f for f in given if f.startswith(("--online.", "--edis", *_GENERATOR_FLAGS))
        )
        if online:
            parts.append(f"{', '.join(online)} (no online phase: --online-steps is 0)")
    elif not cfg.edis:
        generator = sorted(f for f in given if f.startswith(_GENERATOR_FLAGS))
        if generator:
            parts.append(f"{', '.join(generator)} (--no-edis: a baseline has no generator)")
    if cfg.task is not None and not cfg.edis and TASKS[cfg.task]["edis"]:
        parts.append(f"the generator settings of --task {cfg.task} (--no-edis)")
    if "--init-at" in given and cfg.init_from is None:
        parts.append("--init-at (it chooses where an --init-from run starts; none is given)")
    if not parts:
        return None
    return "these flags have no effect in this run: " + "; ".join(parts)


@dataclass(frozen=True)
class ResumeArgs:
    """Continue an interrupted run from its latest checkpoint."""

    run_dir: tyro.conf.Positional[str]


def resume_command(args: list[str]) -> int:
    """Continue an interrupted `edis-jax train` run exactly where its checkpoint left it."""
    from edis_jax.train import loop

    a = parse(ResumeArgs, args, "edis-jax resume")
    summary = loop.resume(a.run_dir)
    _print_summary(summary, a.run_dir)
    return 0


@dataclass(frozen=True)
class ReportArgs:
    """Compare runs: a table of scores over seeds (IQM with 95% bootstrap CIs), PNGs of learning
    curves and of generator health."""

    run_dirs: tyro.conf.Positional[tuple[str, ...]]
    out: str | None = None  # PNG path (default: report.png beside the first run directory)
    baseline: str | None = None  # run directory the others are tested against (Welch's t-test)


def report_command(args: list[str]) -> int:
    """Print a comparison table of runs; write their learning curves and generator health as
    PNGs."""
    from edis_jax import report

    a = parse(ReportArgs, args, "edis-jax report")
    text, curves, health = report.report(list(a.run_dirs), a.out, baseline=a.baseline)
    print(text)
    print(f"\nlearning curves: {curves}")
    if health is not None:
        print(f"generator health: {health}")
    return 0


def diagnose_command(args: list[str]) -> int:
    """Measure how well generated transitions match online data, per guidance energy."""
    diagnose_main(parse(DiagnoseArgs, args, "edis-jax diagnose"))
    return 0


def _flag_value(args: list[str], flag: str) -> str | None:
    """The value of `flag VALUE` or `flag=VALUE` in args (the last one), or None."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


@dataclass(frozen=True)
class TasksArgs:
    """List the published per-task configs (`train --task NAME`), or show one task's values."""

    name: tyro.conf.Positional[str | None] = None  # a task: print every value it sets
    json: bool = False


def tasks_command(args: list[str]) -> int:
    """List the paper's tasks (published per-task configs) that `train --task` applies."""
    from edis_jax import config
    from edis_jax.config.tasks import TASKS

    a = parse(TasksArgs, args, "edis-jax tasks")
    if a.name is not None:
        if a.name not in TASKS:
            return fail(config.unknown_task(a.name))
        task = TASKS[a.name]
        if a.json:
            print(json.dumps(task, indent=2))
            return 0
        print(f"{a.name}: {task['dataset']} ({task['env']}), from {task['source']}")
        print("\n".join(f"  {k} = {v}" for k, v in task["values"].items()))
        return 0
    if a.json:
        print(json.dumps(TASKS, indent=2))
        return 0
    header = ("task", "dataset", "env", "key values (on top of --preset paper)")
    rows = [(n, t["dataset"], t["env"], _key_values(t["values"])) for n, t in TASKS.items()]
    print(format_table([header, *rows]))
    print("\nrun one with `edis-jax train --task NAME`; `edis-jax tasks NAME` shows its values")
    return 0


# Short labels of the values that differ most between tasks, in the order shown.
_KEY_VALUES = (
    ("online.utd", "utd"), ("online.utd_retrain", "utd"), ("online.synthetic_ratio", "rho"),
    ("diffusion.train_steps", "diffusion"), ("iql.expectile", "expectile"), ("iql.beta", "beta"),
    ("energy.scale_state", "w_s"), ("energy.scale_policy", "w_a"),
    ("energy.scale_transition", "w_t"), ("calql.cql_alpha", "alpha"),
    ("calql.cql_alpha_online", "alpha_online"), ("calql.critic_hidden_dims", "critic"),
    ("calql.cql_lagrange", "lagrange"), ("calql.cql_target_action_gap", "gap"),
    ("calql.reward_scale", "r_scale"), ("calql.reward_bias", "r_bias"),
    ("online.baseline_online_ratio", "online_ratio"),
)  # fmt: skip


def _key_values(values: dict) -> str:
    def fmt(v) -> str:
        if isinstance(v, tuple):
            return f"{len(v)}x{v[0]}"
        return f"{v:g}" if isinstance(v, float) else str(v)

    shown = [f"{label} {fmt(values[k])}" for k, label in _KEY_VALUES if k in values]
    return ", ".join(shown) or "(the preset's)"


def _split_guide(args: list[str]) -> list[str]:
    """`--guide state,policy` (DESIGN.md's form) -> tyro's `--guide state policy`; `none` -> no
    guidance (plain SynthER)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i > 0 and args[i - 1] == "--guide":
            out.extend(p for p in arg.split(",") if p and p != "none")
        elif arg.startswith("--guide="):
            out.append("--guide")
            out.extend(p for p in arg.split("=", 1)[1].split(",") if p and p != "none")
        else:
            out.append(arg)
    return out


def _print_summary(summary: dict | None, run_dir: str) -> None:
    if summary is None:
        print(f"stopped early; continue with `edis-jax resume {run_dir}`")
        return

    def fmt(stats: dict) -> str:  # a non-finite score is null in summary.json
        return " ± ".join("nan" if v is None else f"{v:.1f}" for v in (stats["mean"], stats["std"]))

    print(
        f"{summary['algo']}{'-edis' if summary['edis'] else ''} on {summary['dataset']}, "
        f"{summary['seeds']} seeds: offline {fmt(summary['offline_score'])}, "
        f"final {fmt(summary['final_score'])}, best {fmt(summary['best_score'])} "
        f"(normalised), {summary['wall_time_s']['total']:.0f} s -> {run_dir}"
    )


@dataclass(frozen=True)
class DiagnoseArgs:
    """`edis-jax diagnose`: how well does guided sampling match online data (EDIS, Sec. 5)?

    The generator is trained on DATASET (the offline data); TARGET stands for the online data
    (its states are the target state distribution, its transitions train the energies).
    """

    dataset: str  # offline dataset id (the diffusion model's real data)
    target: str  # dataset id standing for the online data, or a RUN_DIR (its online buffer)
    preset: Literal["tiny", "cpu", "paper"] = "cpu"  # sizes of the generator and quick agent
    algo: Algo = "iql"  # the algorithm of the --policy run
    policy: str | None = None  # RUN_DIR whose agent (seed 0) is the policy; default: clone TARGET's
    policy_steps: int = 2000  # behaviour-cloning updates on TARGET (when no --policy)
    n: int = 4096  # synthetic transitions generated per guidance setting
    # rows: none (plain SynthER), each energy alone, all three
    guidance: tuple[Literal["none", "state", "policy", "transition", "all"], ...] = GUIDANCE_ROWS
    diffusion_steps: int | None = None  # override the preset's diffusion training steps
    cep_steps: int | None = None  # override the preset's CEP steps per energy
    scales: tuple[float, float, float] | None = None  # override (w_s, w_a, w_t)
    # The generator as a run has it after this many retrains: retrain k trains on the offline
    # data plus the first k/N of TARGET (in arrival order) and its energies on that part.
    retrains: int = 1
    warm_start: bool | None = None  # keep the diffusion model across retrains (default: preset's)
    initial_steps: int | None = None  # warm start: steps on the offline data first (preset's)
    warm_lr: Literal["restart", "continue"] | None = None  # warm start: lr cosine (preset's)
    next_obs: Literal["absolute", "delta"] | None = None  # model s' or s' - s (preset's)
    inpainting: Literal["clean", "noised"] | None = None  # CEP negatives' condition (preset's)
    inpaint_resamples: int | None = None  # RePaint resampling of the CEP negatives (preset's)
    bank_refreshes: int | None = None  # CEP negative banks per retrain (default: preset's)
    recent_window: int | None = None  # E_s positives from the latest W online rows (preset's)
    sigma_scaled: bool | None = None  # guidance times sigma (default: preset's)
    # Guidance-scale sweep: extra rows for each energy alone and all three at each scale here.
    scale_grid: tuple[float, ...] = ()
    mmd_rows: int = 2000  # rows of each set in the MMD estimate (cost grows as rows^2)
    seed: int = 0  # one key for the agent, the generator and every row's samples
    json: str | None = None  # write {"rows": [...]} here
    progress: bool = True

    def __post_init__(self):
        bad = [g for g in self.guidance if g not in GUIDANCE_ROWS]
        if bad:
            raise ConfigError(f"unknown --guidance {bad}: choose from {', '.join(GUIDANCE_ROWS)}")
        for name in ("n", "policy_steps", "mmd_rows", "retrains"):
            if getattr(self, name) < (1 if name == "retrains" else 2):
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be >= {1 if name == 'retrains' else 2}, "
                    f"got {getattr(self, name)}"
                )


def diagnose_main(args: DiagnoseArgs) -> dict:
    """Load the datasets, run the diagnostic, print the table and write the JSON (if asked)."""
    from edis_jax import diagnose
    from edis_jax.data.datasets import load_dataset
    from edis_jax.train.directory import read_config

    # Every path it writes or reads, checked before the work (minutes of it).
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.policy is not None:
        read_config(Path(args.policy), "--policy")
    offline = load_dataset(args.dataset)
    target, target_env = diagnose.load_target(args.target)
    if offline.env_id != target_env:
        raise ValueError(
            f"--dataset is {offline.env_id} data but --target is {target_env} data: "
            "give data of the same env"
        )
    algo, agent = args.algo, None
    if args.policy is not None:
        diagnose.check_policy_env(args.policy, offline)
        algo, agent = diagnose.load_policy(args.policy)
    config = presets.preset(args.preset)
    if args.diffusion_steps is not None:
        config = config.replace(
            diffusion=dataclasses.replace(config.diffusion, train_steps=args.diffusion_steps)
        )
    if args.cep_steps is not None:
        config = config.replace(energy=dataclasses.replace(config.energy, steps=args.cep_steps))
    diffusion = {
        k: getattr(args, k)
        for k in (
            "warm_start",
            "initial_steps",
            "warm_lr",
            "next_obs",
            "inpainting",
            "inpaint_resamples",
        )
        if getattr(args, k) is not None
    }
    energy = {
        k: getattr(args, k)
        for k in ("bank_refreshes", "recent_window", "sigma_scaled")
        if getattr(args, k) is not None
    }
    config = config.replace(
        diffusion=dataclasses.replace(config.diffusion, **diffusion),
        energy=dataclasses.replace(config.energy, **energy),
    )
    result = diagnose.run_diagnose(
        offline.transitions,
        target,
        offline.env_id,
        config=config,
        algo=algo,
        agent=agent,
        policy_steps=args.policy_steps,
        n=args.n,
        guidance=args.guidance,
        scales=args.scales,
        retrains=args.retrains,
        scale_grid=args.scale_grid,
        mmd_rows=args.mmd_rows,
        seed=args.seed,
        progress=args.progress,
    )
    # The generator's settings as used (preset and overrides), so that a JSON says what it measured.
    result.update(
        dataset=args.dataset,
        target=args.target,
        preset=args.preset,
        diffusion=dataclasses.asdict(config.diffusion),
        energy=dataclasses.asdict(config.energy),
    )
    print(diagnose.format_table(result))
    if args.json is not None:
        path = Path(args.json)
        text = json.dumps(result, indent=2) + "\n"
        write_whole(path, lambda f: f.write(text.encode()))
        print(f"wrote {path}")
    return result

"""The `simgen` command line: one thin module per command group, each calling the library.

Command modules are imported only when their command runs, so `simgen --help` stays fast and
never imports torch. A `SimgenError` is printed as one clear line and exits non-zero; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import click

from simgen.errors import SimgenError, unknown_name

# command name -> "module:attribute" of a click command (resolved lazily)
COMMANDS: dict[str, str] = {
    "generate": "simgen.cli.generate:generate",
    "profiles": "simgen.cli.profiles:profiles",
    "scenarios": "simgen.cli.profiles:scenarios",
    "realism": "simgen.cli.realism:realism",
    "show": "simgen.cli.show:show",
    "consistency": "simgen.cli.consistency:consistency",
    "judge-eval": "simgen.cli.consistency:judge_eval",
    "export": "simgen.cli.export:export",
    "tune": "simgen.cli.tune:tune",
    "rate": "simgen.cli.rate:rate",
}


class UserError(click.ClickException):
    """A `SimgenError` shown as `error: ...` on stderr, exit code 1, no traceback."""

    def format_message(self) -> str:
        return self.message

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"error: {self.format_message()}", err=True)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use.

    It also turns a `SimgenError` into a clean one-line error and Ctrl-C into exit code 130.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx: click.Context, args: list[str]):  # noqa: ANN201
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            raise click.UsageError(unknown_name("command", name, COMMANDS), ctx)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except SimgenError as e:
            error = UserError(str(e))
            error.exit_code = e.exit_code
            raise error from e
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(130) from None


def ray_options(command):  # noqa: ANN001, ANN201
    """--ray and its settings (`simgen.cluster.RayConfig`), for the commands that run on a Ray cluster."""
    from simgen.cluster import RayConfig

    for flag, name, help_ in reversed((
        ("--ray", "ray_address", "Run on a Ray cluster: auto (RAY_ADDRESS, or the cluster this machine joined), HOST:PORT of "
                                 "its head, or ray://HOST:10001. The run folder must be on a filesystem every node sees. "
                                 "Needs simgen[ray]."),
        ("--ray-workers", "ray_workers", "Ray actors, each loading the model(s) once."),
        ("--ray-cpus", "ray_cpus", "CPUs per Ray actor (its torch threads)."),
        ("--ray-gpus", "ray_gpus", "GPUs per Ray actor."),
        ("--ray-retries", "ray_retries", "Retries of a unit of work whose worker died."),
    )):
        if name == "ray_address":
            command = click.option(flag, name, default=None, metavar="ADDRESS", help=help_)(command)
        else:
            command = click.option(flag, name, default=getattr(RayConfig, name.removeprefix("ray_")), show_default=True,
                                   help=help_)(command)
    return command


def ray_config(ray_address: str | None, ray_workers: int, ray_cpus: float, ray_gpus: float, ray_retries: int):  # noqa: ANN201
    """The `RayConfig` of the --ray flags, or None without --ray."""
    if ray_address is None:
        return None
    from simgen.cluster import RayConfig

    return RayConfig(address=ray_address, workers=ray_workers, cpus=ray_cpus, gpus=ray_gpus, retries=ray_retries)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="simgen")
def cli() -> None:
    """simgen: synthetic multi-turn dialogues with controllable simulated users.

    \b
    Quick start:
      simgen scenarios                      # what ships
      simgen profiles sample movie-recommendation -n 5
      simgen generate -n 20 --out outputs/demo
    """


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="simgen")

"""The ``routed-rl`` command line."""

from __future__ import annotations

import typer

from routed_rl import __version__

app = typer.Typer(help="routed-rl: train PPO agents whose behaviours live in removable experts.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"routed-rl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """routed-rl: train PPO agents whose behaviours live in removable experts."""


@app.command()
def info() -> None:
    """Print the version and the registered environments."""
    import routed_rl.envs as envs

    typer.echo(f"routed-rl {__version__}; environments: {envs.OVERSIGHT_GRID_ID}")


def main() -> None:
    """Entry point of the ``routed-rl`` console script."""
    app()

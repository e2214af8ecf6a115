"""The `telescope` command: registers the commands, nothing else."""

import typer

from telescope.cli.common import TelescopeGroup

app = typer.Typer(
    cls=TelescopeGroup,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # database URLs carry passwords
    help="Tune learning rate and weight decay on small muP proxies trained with Muon, then transfer.",
)

# Each command lives in its own module under telescope/cli/ and is registered here.
from telescope.cli import plan  # noqa: E402

app.command("plan")(plan.plan)
from telescope.cli import query, status  # noqa: E402

app.command("query")(query.query)
app.command("status")(status.status)
from telescope.cli import export, sweep  # noqa: E402

app.command("sweep")(sweep.sweep)
app.command("export")(export.export)
from telescope.cli import coord_check, trial  # noqa: E402

app.command("trial")(trial.trial)
app.command("coord-check")(coord_check.coord_check)
from telescope.cli import plot, report  # noqa: E402

app.command("plot")(plot.plot)
app.command("report")(report.report)
from telescope.cli import transfer_check  # noqa: E402

app.command("transfer-check")(transfer_check.transfer_check)
from telescope.cli import batch_study  # noqa: E402

app.command("batch-study")(batch_study.batch_study)
from telescope.cli import dashboard  # noqa: E402

app.command("dashboard")(dashboard.dashboard)
from telescope.cli import db  # noqa: E402

app.add_typer(db.app, name="db")
from telescope.cli import compare  # noqa: E402

app.command("compare")(compare.compare)

from telescope.cli.main import app

app(prog_name="telescope")

from sparsecli.cli import app

app(prog_name="sparsecli")

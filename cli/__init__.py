"""The `memnet` command line: a thin typer front end over memnet/."""

"""python -m simulations.swarm: run one scenario, print the findings, write JSON/CSV and plots."""

from simulations.swarm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""The run core every command that trains shares (sweep, transfer check, batch study).

- `stored`: open a stored run (preflight, lease, create or resume, stop or finish).
- `recorder`: trial events -> Parquet metrics + database rows, in the driver's process.
- `preflight`: the device and data checks every trial relies on, run once per command.
- `line`: an LR line that extends itself past an edge best.
- `keys`: readable trial keys and default run names.
"""

"""One-off jobs: the steps a job goes through and what each outcome means (lifecycle.py), and
the monitor that runs the steps of every job in the background (monitor.py). The lifecycle
decides; a driver (kube/driver.py, or the gateway's client in hub mode) acts."""

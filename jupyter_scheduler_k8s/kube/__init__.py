"""What acts on Kubernetes: the driver for one-off jobs (driver.py) and for schedules
(schedules.py), the objects they create (manifests.py, names.py), files in and out of pods
(transfer.py, safe_tar.py), reading pods' states (reasons.py, watch.py) and the API clients
(clients.py). Nothing here decides what a job does next: that is jobs/."""

"""Hub mode: the jobs gateway (app.py and its endpoints: base, jobs, streams, schedules,
openapi), its client in the user's server (client.py), and what both sides agree on (wire.py)."""

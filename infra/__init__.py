"""Deployment and the local stack (docs/architecture.md, "Local stack" and "Deploy").

- `deployables`: the functions, topics, subscriptions and routes, read from `infra/resources.yaml`
  and `firebase.json`; everything below reads them through it.
- The local stack (`make run`, the tests): `local` (`LocalStack`, `python -m infra.local`),
  `emulators`, `gateway` (the one port), `scheduler`, `services` (a process on a port), `ports`,
  `guard`, `signals`, `auth_emulator` (users and tokens for tests and scripts) and
  `prerequisites` (what the machine needs; standard library only).
- `deploy`: the production deploy, `python -m infra.deploy` (cloudbuild.yaml).
"""

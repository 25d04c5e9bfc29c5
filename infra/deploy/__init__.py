"""The production deploy, planned from `infra/resources.yaml` and `firebase.json`
(docs/architecture.md, "Deploy").

`python -m infra.deploy --project P --project-number N --image IMAGE [--dry-run]` (cloudbuild.yaml
runs it after the tests and the image build). Every step is idempotent: a resource that exists is
updated (or left alone), so a deploy can be re-run after a failure.

- `steps`: what a step is (a command, with the probe that skips it) and the project it deploys to.
- `plan`: every step in order, from `pubsub` (topics, the push invoker, subscriptions, schedules),
  `compute` (the functions and the realtime service, with their environment and secrets) and
  `hosting` (Firestore's TTL, rules and indexes, and Hosting).
- `runner`: runs the steps with gcloud, trying IAM steps again while IAM catches up.
"""

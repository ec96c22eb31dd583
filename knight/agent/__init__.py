"""The optimization loop: patch application, acceptance policy, budget, resume, replay."""

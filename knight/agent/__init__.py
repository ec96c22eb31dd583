"""The optimization loop: context, acceptance policy, budget, outages, resume, replay, consolidation."""

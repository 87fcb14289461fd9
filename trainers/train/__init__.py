"""The reference trainer (`gymwire train`): configuration, then per step rollout -> scoring ->
update -> bookkeeping, with the advantage estimators, losses and horizon schedules they use."""

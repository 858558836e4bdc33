"""What a run is, before torch is imported: the constraint table (:mod:`.params`), the registries of losses, data
sets and models (:mod:`.registries`, :mod:`.plugins`), :class:`~flx.experiment.config.Config` and run keys
(:mod:`.config`), spec files (:mod:`.spec`), planning a sweep (:mod:`.plan`) and the metrics' vocabulary
(:mod:`.metrics`)."""

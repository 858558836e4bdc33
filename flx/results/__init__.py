"""What runs leave behind: the store (:mod:`.store`), artefacts (:mod:`.artefacts`), runs.csv (:mod:`.records`),
summaries over seeds (:mod:`.summary`), browsing (:mod:`.browse`) and export to MLflow (:mod:`.export`)."""

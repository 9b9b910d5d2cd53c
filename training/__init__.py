"""Models and what they learn from, one sub-package per job: `serving` (generators, prompts,
citations), `feedback` (the store of answers, ratings, corrections and curated answers) and
`learning` (training set, QLoRA worker, gate, report). Beside them what the jobs share: settings
(`config`), devices and 4-bit loading (`devices`), answer scores (`scoring`) and the adapter
registry, where learning publishes and serving reads (`registry`)."""

"""Jobs: what a user asks Claude Code to do, queued, run as that user, and recorded.

How a job moves (the statuses and their transitions: `status`; each one statement of
`transitions`, the only writer of the jobs table):

    service ─ create (created) ─ start (queued) ─ queue.claim (running) in the same
      transaction when a slot is free, else the dispatcher claims it once one frees
    dispatcher ─ running.JobRunner.run(claim):
        preparation ─ workspace, images, command line ─> executors.base.PreparedRun
        executor.start ─> Run (local: spawner_client ─ wire ─ spawner ─ reaper, in the
          run's control group, `containment`, and sandbox, `sandbox`/`landlock`)
        Run's lines (`lines`) ─ transcript ─ recorder ─ events ─ followers (`reading`)
        exit │ stop (cancel, shutdown, OOM, output or disk limit, `disk`) │ timeout
        ─ Run.end ─ outcome.decide(RunEnd) ─ journal: transition `finish`, with the
          transcript's last events and what the job's results ask for
    service ─ cancel (cancelled; a running job is stopped first) ─ resume (queued again)
      ─ delete; retention ─ workspaces past JOB_RETENTION_DAYS, remounted at a restart
    dispatcher.recover ─ a dead server's running jobs: executor.end_leftover, `finish`

The spawner imports nothing of this package but `wire`, `landlock`, `seccomp` and `reaper`.
"""

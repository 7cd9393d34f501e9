"""Jobs: what a user asks Claude Code to do, queued, run as that user, and recorded.

    service ─ the lifecycle (create, start, cancel, resume, delete) and reading
    queue ─ claims under the limits, fairness, leases
    dispatcher ─ runs claimed jobs, renews leases, recovers a dead server's
    execution ─ one run: prepare, start on the executor, follow, record its end
    outcome ─ how a run ended (`RunEnd`) and the job's status that follows
    executors/ ─ where a run runs: base (the Protocol), local (this host)
        local: spawner_client ─ wire ─ spawner ─ reaper, process, containment,
               sandbox, landlock
    lines, transcript, recorder, events ─ output lines to events, stored and followed
    command, images, disk, status ─ argv/env/stdin, attachments, free space, statuses

Nothing here is imported by the spawner but `wire`, `landlock` and `reaper`.
"""

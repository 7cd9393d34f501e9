"""Copy-on-write workspaces: every job works in its own clone of a stored repository, made in
milliseconds whatever its size, never touching the repository or another job's files.

`engine.WorkspaceEngine` holds the policy; one module per strategy holds the mechanism
(`base.Strategy`, handed a `base.Workspace`): `btrfs` (snapshots), `overlay` (overlayfs
over an idmapped lower layer), `reflink` (FICLONE per file), `copy` (a real copy, the last
resort). `registry` names them in the order `auto` tries them; `probe` finds which work on
DATA_DIR's own filesystem. Hard links are never used: a tool that writes a file in place
through one would change the original.

Layout under DATA_DIR:

    repos/                      0700 root
      <name>/                   a stored clone: full working tree with .git, at its branch
                                head, root's, writable by root alone; a subvolume on btrfs;
                                its commit noted in a trusted.* attribute of its top
    workspaces/                 0711 root: users pass through, cannot list
      <job_id>/                 a job's workspace: 0700, the job user's, as is everything in
                                it (an overlay mount point with the overlay strategy)
    cow/                        0700 root: the engine's own
      jobs/<job_id>/            a job's private state, never inside the workspace:
        record.json             strategy, repository, commit, uid, gid, and the key of
                                its disk quota if it has one (see `quotas`)
        upper/ work/ lower/     overlay layers and the idmapped lower's mount point
      bases/<repo>/<commit>-<uid>/
                                what a strategy keeps per user and commit: btrfs alone, a
                                snapshot of the repository given to the user once (their
                                workspaces are snapshots of it)
      kept/<repo>/<commit>/     a stored tree replaced by a pull or removed while
                                workspaces made from it remain: an overlay's lower
                                layer, and the start commit every workspace's diff reads
                                (never the job's own copy of it, which the job can write)
      locks/<repo>              flock files, one per repository; `.quotas`, held while a
                                new workspace's quota key is chosen
      tmp/<pid>-<random>/       scratch: probes, adoptions in progress, trees being deleted

git's index. A workspace shows the stored files under its user's id (idmapped, chowned or
copied), with other inode numbers and change times than the index the clone wrote records.
The stored configuration (`servergit`) has git compare only what every strategy keeps: the
whole-second mtime, the size and the x bit (`core.checkStat=minimal`). So that one index
holds in every workspace of every user as it is: nothing is refreshed or kept per user and
commit (btrfs's base aside, see `btrfs`), and a workspace's first `git status` reads no
file. `adopt_repository` returns only once the second in which the clone wrote its files is
over, or a change of the same size made in it would pass unseen. What git still misses is
a file rewritten with the same size and its mtime set back to the very second recorded
(`touch -r`, `cp -p` from a file of that second); a job's result is taken from the bytes
(`repositories.git.diff_workspace`), not from this index.

Measured with bench/workspaces.py (docs/benchmarks.md, "Workspaces"; 2 cores shared with
other engineers' runs, load average 8-15: medians, read them as orders of magnitude). The
first job of a user at a new commit, after a pull, with overlay: 1.5-7 ms at 20,000 files
and 3-5 ms at 100,000 (a per-user index cost 1.9 s / 9-25 s, 10.9 s at 20,000 under the
same load), and 0 files for git to read again; a workspace's first `git status`, which
lstats every file and lists every folder through a fresh overlay, 0.5-3.6 s / 7-10 s under
that load (0.2-0.3 s / 0.7-1.1 s on a quiet machine, measured with the per-user index).
btrfs's first job of a user at a commit still chowns a snapshot: 5.6 s at 20,000 files and
11.3 s at 100,000 (20-28 s at 20,000 with the old index refresh, same load).

Life of the shared trees: a base or kept tree lives exactly as long as a workspace record
refers to it. `remove_workspace` drops what its repository no longer uses; `collect()`
does so for every repository and also removes scratch left by dead processes (call it at
start-up). A pull (`adopt_repository`) swaps the new tree in with one atomic rename
(RENAME_EXCHANGE); the old one is kept while a workspace made from it remains, and
otherwise deleted. Bases are snapshots, independent of the tree they came from.
"""

from claude_batch_server.workspaces.base import WorkspaceError
from claude_batch_server.workspaces.engine import WorkspaceEngine

__all__ = ["WorkspaceEngine", "WorkspaceError"]

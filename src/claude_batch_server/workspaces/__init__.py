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
                                what a strategy keeps per user and commit: btrfs, a
                                snapshot of the repository given to the user once (their
                                workspaces are snapshots of it); overlay, the user's
                                refreshed git index (see `gitindex`)
      kept/<repo>/<commit>/     a stored tree replaced by a pull or removed while overlay
                                workspaces still have it as their lower layer
      locks/<repo>              flock files, one per repository; `.quotas`, held while a
                                new workspace's quota key is chosen
      tmp/<pid>-<random>/       scratch: probes, adoptions in progress, trees being deleted

Life of the shared trees: a base or kept tree lives exactly as long as a workspace record
refers to it. `remove_workspace` drops what its repository no longer uses; `collect()`
does so for every repository and also removes scratch left by dead processes (call it at
start-up). A pull (`adopt_repository`) swaps the new tree in with one atomic rename
(RENAME_EXCHANGE); the old one is kept when an overlay workspace still reads it, and
otherwise deleted. Bases are snapshots, independent of the tree they came from.
"""

from claude_batch_server.workspaces.base import WorkspaceError
from claude_batch_server.workspaces.engine import WorkspaceEngine

__all__ = ["WorkspaceEngine", "WorkspaceError"]

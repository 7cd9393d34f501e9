"""Per-job disk quotas on DATA_DIR, where its filesystem offers them: a job that writes
past JOB_DISK_MAX gets "Disk quota exceeded" (EDQUOT) in its own workspace and TMPDIR, and
goes on or fails as it chooses, while other jobs, the database and the server keep their
space. Where none is offered, the disk guard (`jobs.disk`) alone stands between a job and
a full DATA_DIR.

`policy.DiskQuotas` holds the policy: which mechanism is used (found at start, reported by
`GET /system/storage`), the key of each job's quota (kept in its workspace record, so it
is freed only once the workspace is gone), and the limit: JOB_DISK_MAX on top of what the
workspace held when it was made. One module per mechanism (`base.Mechanism`): `project`,
XFS (and ext4) project quotas.
"""

from claude_batch_server.quotas.policy import DiskQuotas

__all__ = ["DiskQuotas"]

"""Jobs: statuses, the lifecycle (`service`), the durable queue (`queue`), the dispatcher
that runs claimed jobs (`dispatcher`), Claude Code run as the user (`runner`), and its
stream-json output turned into events (`transcript`)."""

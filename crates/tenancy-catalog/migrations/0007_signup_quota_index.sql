-- Public signups are counted over a sliding window at every signup (tenancy-control's
-- signup quota); this partial index keeps that count to the window's own rows instead of a
-- scan of every workflow ever recorded.
CREATE INDEX IF NOT EXISTS workflows_signup_created_idx
    ON tenancy_catalog.workflows (created_at)
    WHERE kind = 'provision' AND actor LIKE 'signup%';

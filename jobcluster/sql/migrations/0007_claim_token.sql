-- The claim that made a job RUNNING: a worker whose claim reply was lost (the connection
-- dropped after the commit) asks again with the same token and gets its attempt back,
-- instead of finding the job RUNNING and dropping it (the job then ran nowhere, forever).
ALTER TABLE jobs ADD COLUMN claim_token uuid;

-- Rewritten parts (compaction, deletion): a part's blob key carries its generation, so a new
-- blob never overwrites one an export may still be reading; doomed_blobs lists blob keys to be
-- deleted once due (blobs a swap replaced, and blobs of a rewrite that never committed).
ALTER TABLE parts ADD COLUMN gen integer NOT NULL DEFAULT 0;
-- taken: a sweep is deleting the blob (forgotten once it is gone, taken again if it dies).
CREATE TABLE doomed_blobs (
    key text PRIMARY KEY, delete_after timestamptz NOT NULL, taken boolean NOT NULL DEFAULT false);
CREATE INDEX doomed_blobs_due ON doomed_blobs (delete_after);

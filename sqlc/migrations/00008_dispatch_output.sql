-- A dispatch's output is contiguous: output_stored is how many bytes of it are stored,
-- from offset 0 without a gap or an overlap, never beyond max_output_bytes. A chunk is
-- stored only where the stored output ends (RecordReports), so that a node sending
-- overlapping chunks cannot multiply what is stored; reads go up to output_stored.
-- output_lost_reason, when not empty, says why less output is stored than the node
-- reported (up to the cap) when it ended the dispatch: its output was lost.

-- +goose Up
alter table dispatches
    add column output_stored bigint not null default 0,
    add column output_lost_reason text not null default '';

-- What was stored before: chunks that overlapped the output before them, or left a gap
-- after it, came only from nodes that broke the protocol; reads skip overlaps and gaps.
update dispatches d
set output_stored = least(s.stored, d.max_output_bytes)
from (select dispatch_id, max("offset" + octet_length(data)) as stored
      from dispatch_output group by dispatch_id) s
where s.dispatch_id = d.id;

alter table dispatches
    add constraint dispatches_output_stored check (output_stored between 0 and max_output_bytes);

-- +goose Down
alter table dispatches
    drop constraint dispatches_output_stored,
    drop column output_lost_reason,
    drop column output_stored;

-- A statement that changes many dispatches (a node's round of results, a claim, the
-- sweeper) or stores many chunks of output notifies once per channel, not once per
-- row: the payload holds the lines the row triggers of 00004 and 00005 sent one by one,
-- joined by newlines, "<device id> <dispatch id> <cancel|state:<new state>>" on
-- palyra_dispatch and "<dispatch id>" (each once) on palyra_dispatch_output; lines that
-- do not fit in one payload (less than 8000 bytes) go in the next notification. Inserts
-- of dispatches keep their row trigger (each inserts one), and so does palyra_sessions
-- (a transition table on devices would copy the rows of every heartbeat flush). A
-- replica older than this reads a payload of one line only: during a rolling upgrade it
-- misses the notifications of statements that changed more than one dispatch, and its
-- watchers see those changes at their next poll (every second); inserts and single
-- cancellations, which its sessions claim on, still notify one line each.

-- +goose Up
-- +goose StatementBegin
create function palyra_notify_lines(channel text, lines text[]) returns void language plpgsql as $$
declare
    payload text := '';
    line text;
begin
    foreach line in array lines loop
        if payload <> '' and octet_length(payload) + 1 + octet_length(line) >= 8000 then
            perform pg_notify(channel, payload);
            payload := '';
        end if;
        payload := case when payload = '' then line else payload || E'\n' || line end;
    end loop;
    if payload <> '' then
        perform pg_notify(channel, payload);
    end if;
end;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
create function notify_dispatches_updated() returns trigger language plpgsql as $$
begin
    perform palyra_notify_lines('palyra_dispatch', array(
        select n.device_id || ' ' || n.id || case when n.state is distinct from o.state
                                                  then ' state:' || n.state else ' cancel' end
        from new_rows n join old_rows o on o.id = n.id
        where n.state is distinct from o.state or n.cancel_requested_at is distinct from o.cancel_requested_at));
    return null;
end;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
create function notify_dispatch_output_stored() returns trigger language plpgsql as $$
begin
    perform palyra_notify_lines('palyra_dispatch_output', array(select distinct dispatch_id from new_rows));
    return null;
end;
$$;
-- +goose StatementEnd

drop trigger dispatches_notify on dispatches;
create trigger dispatches_notify
    after insert on dispatches
    for each row execute function notify_dispatch();
create trigger dispatches_notify_update
    after update on dispatches
    referencing old table as old_rows new table as new_rows
    for each statement execute function notify_dispatches_updated();

drop trigger dispatch_output_notify on dispatch_output;
create trigger dispatch_output_notify
    after insert on dispatch_output
    referencing new table as new_rows
    for each statement execute function notify_dispatch_output_stored();

-- +goose Down
drop trigger dispatch_output_notify on dispatch_output;
create trigger dispatch_output_notify
    after insert on dispatch_output
    for each row execute function notify_dispatch_output();
drop trigger dispatches_notify_update on dispatches;
drop trigger dispatches_notify on dispatches;
create trigger dispatches_notify
    after insert or update on dispatches
    for each row execute function notify_dispatch();
drop function notify_dispatch_output_stored;
drop function notify_dispatches_updated;
drop function palyra_notify_lines;

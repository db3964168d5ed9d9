-- Notifications of a dispatch's change of state name the new state, so that those who
-- wait only for its end (ExecuteCapability) are not woken to re-read it at every step:
-- payload "<device id> <dispatch id> <event>", event one of queued, cancel, or
-- state:<new state> (replicas that predate this read any event but queued and cancel as
-- a change of state).

-- +goose Up
-- +goose StatementBegin
create or replace function notify_dispatch() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        perform pg_notify('palyra_dispatch', new.device_id || ' ' || new.id || ' queued');
    elsif new.state is distinct from old.state then
        perform pg_notify('palyra_dispatch', new.device_id || ' ' || new.id || ' state:' || new.state);
    elsif new.cancel_requested_at is distinct from old.cancel_requested_at then
        perform pg_notify('palyra_dispatch', new.device_id || ' ' || new.id || ' cancel');
    end if;
    return null;
end;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
create or replace function notify_dispatch() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        perform pg_notify('palyra_dispatch', new.device_id || ' ' || new.id || ' queued');
    elsif new.state is distinct from old.state then
        perform pg_notify('palyra_dispatch', new.device_id || ' ' || new.id || ' state');
    elsif new.cancel_requested_at is distinct from old.cancel_requested_at then
        perform pg_notify('palyra_dispatch', new.device_id || ' ' || new.id || ' cancel');
    end if;
    return null;
end;
$$;
-- +goose StatementEnd

-- name: ServerVersion :one
select current_setting('server_version')::text as server_version;

package client

import (
	"context"

	"connectrpc.com/connect"
)

// bearerInterceptor sends the API token with every call, unary and streaming. The token
// travels only in the request header: it is never logged nor put in an error.
type bearerInterceptor struct{ token string }

var _ connect.Interceptor = bearerInterceptor{}

// WrapUnary implements connect.Interceptor.
func (b bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	if b.token == "" {
		return next
	}
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+b.token)
		return next(ctx, req)
	}
}

// WrapStreamingClient implements connect.Interceptor.
func (b bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	if b.token == "" {
		return next
	}
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+b.token)
		return conn
	}
}

// WrapStreamingHandler implements connect.Interceptor.
func (b bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

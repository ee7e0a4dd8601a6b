"""HTTP routers: parse the request, call a service, render the result."""

// Preloaded (`node --import`) into the reference MCP server, which listens on every interface
// and has no option to choose one: its listening socket is bound to 127.0.0.1 instead, as every
// service the tests start must be.
import http from "node:http";

const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (port, ...rest) {
  if (typeof port === "number" || typeof port === "string") {
    const callback = rest.find((arg) => typeof arg === "function");
    return listen.call(this, Number(port), "127.0.0.1", callback);
  }
  return listen.call(this, port, ...rest);
};

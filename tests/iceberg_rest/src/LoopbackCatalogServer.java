// Apache Iceberg's REST catalog fixture served on 127.0.0.1 only, on a port the system picks.
//
// Iceberg's own RESTCatalogServer listens on every interface at a fixed port; the tests want
// loopback and no port races, so this starts the same catalog adapter and servlet behind a
// connector bound to 127.0.0.1:0 and prints "PORT <n>" once it accepts connections. The
// backing catalog is a JDBC catalog in in-memory SQLite with its warehouse at the folder in
// CATALOG_WAREHOUSE. With REQUIRED_TOKEN set, a request without "Authorization: Bearer
// <that token>" is refused with 401, so a test can tell that a client sent its credential.
package org.apache.iceberg.rest;

import java.util.HashMap;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.iceberg.CatalogUtil;
import org.apache.iceberg.catalog.Catalog;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.http.HttpHeader;
import org.eclipse.jetty.server.Handler;
import org.eclipse.jetty.server.Request;
import org.eclipse.jetty.server.Response;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.util.Callback;

public final class LoopbackCatalogServer {
  private LoopbackCatalogServer() {}

  /** Refuses requests that lack the expected bearer token. */
  static final class TokenCheck extends Handler.Wrapper {
    private final String expected;

    TokenCheck(String token, Handler inner) {
      super(inner);
      this.expected = "Bearer " + token;
    }

    @Override
    public boolean handle(Request request, Response response, Callback callback)
        throws Exception {
      if (!expected.equals(request.getHeaders().get(HttpHeader.AUTHORIZATION))) {
        Response.writeError(request, response, callback, 401);
        return true;
      }
      return super.handle(request, response, callback);
    }
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> props = new HashMap<>();
    props.put("catalog-impl", "org.apache.iceberg.jdbc.JdbcCatalog");
    props.put("uri", "jdbc:sqlite::memory:");
    props.put("jdbc.schema-version", "V1");
    props.put("warehouse", System.getenv("CATALOG_WAREHOUSE"));
    Catalog backend = CatalogUtil.buildIcebergCatalog("rest_backend", props, new Configuration());
    RESTCatalogServer.CatalogContext context = new RESTCatalogServer.CatalogContext(backend, props);
    ServletContextHandler servlets = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    servlets.addServlet(
        new ServletHolder(new RESTCatalogServlet(new RESTServerCatalogAdapter(context))), "/*");

    Server server = new Server();
    ServerConnector connector = new ServerConnector(server);
    connector.setHost("127.0.0.1");
    connector.setPort(0);
    server.addConnector(connector);
    String token = System.getenv("REQUIRED_TOKEN");
    server.setHandler(token == null || token.isEmpty() ? servlets : new TokenCheck(token, servlets));
    server.start();
    System.out.println("PORT " + connector.getLocalPort());
    System.out.flush();
    server.join();
  }
}

VENV ?= .venv
PYTHON := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: install system-deps spark-iceberg iceberg-rest sql-catalog-reader run demo test bench lint typecheck wheel clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,bench,dev]'
	@echo "compiling the search kernels once (a minute or two; later runs load them)"
	$(PYTHON) -m quiver.flight_server.sql.warmup
	touch $@

# docker-compose validates compose/ in the tests; Maven and a JDK run the JDBC driver tests
# (tests/java); PostgreSQL's server programs run the Iceberg SQL catalog tests
# (tests/iceberg_sql), which start a private server of their own, so the package is told not
# to create (and start) its main cluster. Debian's packages, when we may install them.
system-deps:
	@command -v docker-compose >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; \
		else echo "docker-compose is not installed: its tests will be skipped"; fi; }
	@{ command -v mvn >/dev/null && command -v javac >/dev/null; } || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && \
			apt-get install -y -qq maven default-jdk-headless >/dev/null; \
		else echo "Maven or a JDK is missing: the JDBC driver tests will be skipped"; fi; }
	@{ command -v postgres >/dev/null || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; } || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-common >/dev/null && \
			sed -i 's/^#*[[:space:]]*create_main_cluster.*/create_main_cluster = false/' \
				/etc/postgresql-common/createcluster.conf && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || \
			echo "PostgreSQL could not be installed: the PostgreSQL catalog tests will be skipped"; \
		else echo "PostgreSQL is not installed: the PostgreSQL catalog tests will be skipped"; fi; }

# Spark reading tables through Iceberg (tests/spark_iceberg): Iceberg's Spark runtime jar,
# and a pyspark it is built for when the installed one has none. Fetched once, each step
# time-limited; without them those tests are skipped.
spark-iceberg: $(VENV)/.installed system-deps
	@$(PYTHON) -m tests.spark_iceberg.env fetch || true

# Apache Iceberg's REST catalog fixture (tests/iceberg_rest): its jars, resolved by Maven into
# ~/.cache/quiver/iceberg-rest, and a small launcher compiled beside them. The tests fetch it
# themselves when it is missing; without Maven or a JDK they are skipped.
iceberg-rest: $(VENV)/.installed system-deps
	@$(PYTHON) -m tests.iceberg_rest.server fetch || true

install: $(VENV)/.installed system-deps

# The server needs the Python packages only.
run: $(VENV)/.installed
	$(VENV)/bin/quiver serve

demo: $(VENV)/.installed
	$(VENV)/bin/quiver demo

# pyiceberg's SqlCatalog reading the catalogs Quiver writes (tests/iceberg_sql): it needs
# SQLAlchemy 2, which flightsql-dbapi's SQLAlchemy 1.4 keeps out of the environment, so it is
# installed once into ~/.cache/quiver and put first on the reader's path. Without it those
# reads are skipped.
sql-catalog-reader: $(VENV)/.installed
	@$(PYTHON) -m tests.iceberg_sql.reader fetch || true

test: install spark-iceberg sql-catalog-reader
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) -m bench.superfile_bench
	$(PYTHON) -m bench.table_bench
	$(PYTHON) -m bench.bm25_scale_bench
	$(PYTHON) -m bench.sql_bench
	$(PYTHON) -m bench.flight_bench
	$(PYTHON) -m bench.security_bench
	$(PYTHON) -m bench.iceberg_bench
	$(PYTHON) -m bench.phrase_bench
	$(PYTHON) -m bench.write_bench
	$(PYTHON) -m bench.vector_bench
	$(PYTHON) -m bench.first_query_bench

lint: install
	$(VENV)/bin/ruff check .
	$(MAKE) typecheck

# mypy over the packages as installed (quiver.superfile is superfile/, setup.py): a tree of
# links gives it that layout from the checkout. Configured in pyproject's [tool.mypy].
typecheck: install
	rm -rf build/mypy && mkdir -p build/mypy/quiver
	ln -s $(CURDIR)/quiver/*.py build/mypy/quiver/
	for layer in superfile supertable catalog flight_server proto; do \
		ln -s $(CURDIR)/$$layer build/mypy/quiver/$$layer; done
	cd build/mypy && $(CURDIR)/$(PYTHON) -m mypy --config-file $(CURDIR)/pyproject.toml -p quiver

# The wheel and sdist users install (the image installs the same wheel).
wheel: $(VENV)/.installed
	$(PYTHON) -m build --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) data dist build .pytest_cache .hypothesis

# The Flight SQL messages are compiled into a private descriptor pool: other libraries
# (flightsql-dbapi) register the same message names in the default pool, and both
# must be importable in one process. Regenerate after editing a .proto file.
.PHONY: proto
proto:
	$(PYTHON) -m grpc_tools.protoc -I proto --python_out=proto --pyi_out=proto \
		proto/FlightSql.proto proto/Flight.proto
	cd proto && for pair in FlightSql:flight_sql Flight:flight; do \
		src=$${pair%%:*}_pb2; dst=$${pair##*:}_pb2; \
		for ext in py pyi; do \
			{ echo '# ruff: noqa'; cat $$src.$$ext; } > $$dst.$$ext && rm $$src.$$ext; \
		done; \
	done
	sed -i "s/'FlightSql_pb2'/'quiver.proto.flight_sql_pb2'/" proto/flight_sql_pb2.py
	sed -i "s/'Flight_pb2'/'quiver.proto.flight_pb2'/" proto/flight_pb2.py
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/_POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = _POOL.AddSerializedFile(/' \
		proto/flight_sql_pb2.py
	grep -q '^DESCRIPTOR = _POOL.AddSerializedFile(' proto/flight_sql_pb2.py

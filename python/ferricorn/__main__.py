from ferricorn import run

run()

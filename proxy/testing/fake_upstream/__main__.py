from proxy.testing.fake_upstream.app import main

main()

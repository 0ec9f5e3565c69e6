>D
>B
->sensor53 r
>M 1
; Belgian Fluvius e-MUCS (DSMR 5 based) on the P1 port: 115200 8N1, CRC checked
+1,3,o,0,115200,FLU,1
1,1-0:1.8.1(@1,Import day,kWh,import_t1,3
1,1-0:1.8.2(@1,Import night,kWh,import_t2,3
1,1-0:2.8.1(@1,Export day,kWh,export_t1,3
1,1-0:2.8.2(@1,Export night,kWh,export_t2,3
1,0-0:96.14.0(@1,Tariff,,tariff,0
1,1-0:1.4.0(@1,Average demand,kW,demand_avg,3
1,1-0:1.6.0(@(1:1,Peak demand this month,kW,demand_peak,3
1,1-0:1.7.0(@1,Power import,kW,power_imp,3
1,1-0:2.7.0(@1,Power export,kW,power_exp,3
1,1-0:32.7.0(@1,Voltage L1,V,volts_l1,1
1,1-0:52.7.0(@1,Voltage L2,V,volts_l2,1
1,1-0:72.7.0(@1,Voltage L3,V,volts_l3,1
1,1-0:31.7.0(@1,Current L1,A,amps_l1,2
1,1-0:51.7.0(@1,Current L2,A,amps_l2,2
1,1-0:71.7.0(@1,Current L3,A,amps_l3,2
1,0-0:96.1.1(@#),Meter id,,meter_id,0
1,0-1:24.2.3(@(1:1,Gas,m3,gas,3
1,0-2:24.2.1(@(1:1,Water,m3,water,3
#
